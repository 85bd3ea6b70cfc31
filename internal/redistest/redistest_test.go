package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

func TestClientPing(t *testing.T) {
	t.Parallel()
	c := Client(t)
	if got, err := c.Ping(t.Context()).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v; want PONG", got, err)
	}
	if got := c.Options().Addr; got != Addr(t) {
		t.Errorf("client address %q, Addr %q", got, Addr(t))
	}
	if !strings.HasPrefix(Addr(t), "127.0.0.1:") {
		t.Errorf("Addr = %q, want 127.0.0.1:port", Addr(t))
	}
}

func TestClientConcurrent(t *testing.T) {
	t.Parallel()
	c := Client(t)
	ns := Namespace(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			key := fmt.Sprintf("%s:%d", ns, i)
			if err := c.Set(t.Context(), key, i, 0).Err(); err != nil {
				errs <- err
			}
			if got, err := c.Incr(t.Context(), key).Result(); err != nil || got != int64(i)+1 {
				errs <- fmt.Errorf("INCR %s = %d, %v; want %d", key, got, err, i+1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

var nsPattern = regexp.MustCompile(`^rt-[0-9]+-[0-9]+-[A-Za-z0-9._-]{1,32}$`)

func TestNamespaceUnique(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 100 {
		ns := Namespace(t)
		if seen[ns] {
			t.Fatalf("Namespace returned %q twice", ns)
		}
		seen[ns] = true
		if !nsPattern.MatchString(ns) {
			t.Fatalf("Namespace = %q, does not match %v", ns, nsPattern)
		}
	}
	t.Run("weird name: {a}*[b]?\\ /x with a long tail that is cut off", func(t *testing.T) {
		ns := Namespace(t)
		if !nsPattern.MatchString(ns) || strings.ContainsAny(ns, "{}*?[]\\ /") {
			t.Fatalf("Namespace = %q, contains special characters", ns)
		}
	})
}

func TestNamespaceCleanup(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := Client(t)
	cc := StartCluster(t)
	other := Namespace(t) // still alive while the subtest's namespace is cleaned
	if err := c.Set(ctx, other+":keep", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cc.Set(ctx, other+":keep", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	var ns string
	t.Run("sub", func(t *testing.T) {
		ns = Namespace(t)
		ctx := t.Context()
		for i := range 2500 { // more than one SCAN page
			if err := c.Set(ctx, fmt.Sprintf("%s:%d", ns, i), i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.HSet(ctx, "prefix:{"+ns+"}:h", "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		for i := range 300 { // many slots, so every master holds some
			if err := cc.Set(ctx, fmt.Sprintf("%s:%d", ns, i), i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cc.Set(ctx, "{"+ns+"}:tagged", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})

	if n, err := countKeys(c, "*"+ns+"*"); err != nil || n != 0 {
		t.Errorf("%d keys of namespace %q left on the single server after cleanup (err %v)", n, ns, err)
	}
	var mu sync.Mutex
	total := 0
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n, err := countKeys(node, "*"+ns+"*")
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != 0 {
		t.Errorf("%d keys of namespace %q left on the cluster after cleanup", total, ns)
	}
	if got, err := c.Get(ctx, other+":keep").Result(); err != nil || got != "1" {
		t.Errorf("key of another namespace on the single server: %q, %v", got, err)
	}
	if got, err := cc.Get(ctx, other+":keep").Result(); err != nil || got != "1" {
		t.Errorf("key of another namespace on the cluster: %q, %v", got, err)
	}
}

// countKeys counts the keys matching pattern on one server.
func countKeys(c *redis.Client, pattern string) (int, error) {
	keys, err := c.Keys(context.Background(), pattern).Result()
	if err != nil {
		return 0, fmt.Errorf("KEYS %s on %s: %w", pattern, c.Options().Addr, err)
	}
	return len(keys), nil
}

func TestServerRestartKeepsAOF(t *testing.T) {
	t.Parallel()
	s := Server(t, "--appendonly", "yes", "--appendfsync", "always")
	if s.Addr() == Addr(t) {
		t.Fatalf("private server shares the address %s of the shared server", s.Addr())
	}
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after Restart GET k = %q, %v; want \"v\"", got, err)
	}
	// CONFIG SET is not persisted, so the restarted server has the default policy again.
	if got, err := c.ConfigGet(ctx, "maxmemory-policy").Result(); err != nil || got["maxmemory-policy"] != "noeviction" {
		t.Errorf("after Restart maxmemory-policy = %v, %v; want noeviction", got, err)
	}
}

func TestServerRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	s := Server(t)
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after Restart without persistence GET k: %v, want redis.Nil", err)
	}
}

func TestServerStop(t *testing.T) {
	t.Parallel()
	s := Server(t)
	c := s.Client(t)
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := probe(s.Addr(), 0); err == nil {
		t.Fatalf("server on %s still answers after Stop", s.Addr())
	}
	if _, err := os.Stat(s.Dir()); err != nil {
		t.Fatalf("Stop removed the directory: %v", err)
	}
}

func TestServerBadArgs(t *testing.T) {
	t.Parallel()
	_, err := startSrv(false, []string{"--no-such-option", "1"})
	if err == nil {
		t.Fatal("redis-server started with an unknown option")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("error does not quote the server's complaint: %v", err)
	}
}

func TestNotFound(t *testing.T) {
	// Not parallel: it changes PATH.
	t.Setenv("PATH", t.TempDir())
	_, err := startSrv(false, nil)
	if !errors.Is(err, errNotFound) {
		t.Fatalf("startSrv without redis-server: %v, want %v", err, errNotFound)
	}
	want := "redis-server not found: run make test (it installs it) or apt-get install redis-server"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cc := StartCluster(t)
	t.Logf("StartCluster took %v", time.Since(start))
	ctx := t.Context()
	ns := Namespace(t)

	addrs := ClusterAddrs(t)
	if len(addrs) != 3 {
		t.Fatalf("ClusterAddrs = %v, want 3 masters", addrs)
	}
	for _, a := range addrs {
		info, err := redisClientFor(t, a).ClusterInfo(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			t.Fatalf("CLUSTER INFO on %s:\n%s", a, info)
		}
	}

	slots := make(map[int64]bool)
	for i := range 200 {
		key := fmt.Sprintf("%s:%d", ns, i)
		if err := cc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		slot, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		slots[slot] = true
	}
	if len(slots) < 100 {
		t.Errorf("keys landed in only %d slots", len(slots))
	}
	for i := range 200 {
		key := fmt.Sprintf("%s:%d", ns, i)
		if got, err := cc.Get(ctx, key).Int(); err != nil || got != i {
			t.Fatalf("GET %s = %d, %v; want %d", key, got, err, i)
		}
	}
	var mu sync.Mutex
	masters := 0
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n, err := node.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("master %s holds no keys", node.Options().Addr)
		}
		mu.Lock()
		masters++
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if masters != 3 {
		t.Errorf("ForEachMaster visited %d masters, want 3", masters)
	}

	script := redis.NewScript(`
		redis.call('SET', KEYS[1], ARGV[1])
		redis.call('SET', KEYS[2], ARGV[2])
		return redis.call('MGET', KEYS[1], KEYS[2])`)
	tag := "{" + ns + "}"
	got, err := script.Run(ctx, cc, []string{tag + ":a", tag + ":b"}, "x", "y").StringSlice()
	if err != nil {
		t.Fatalf("EVAL with hash-tagged keys: %v", err)
	}
	if len(got) != 2 || got[0] != "x" || got[1] != "y" {
		t.Fatalf("EVAL = %v, want [x y]", got)
	}
	if err := cc.Eval(ctx, "return 1", []string{ns + ":a", ns + ":b"}).Err(); err == nil {
		t.Log("EVAL on keys of different slots unexpectedly succeeded")
	}
}

func TestClusterParallelUsers(t *testing.T) {
	t.Parallel()
	// Concurrent first users share one cluster.
	var wg sync.WaitGroup
	addrs := make([][]string, 4)
	for i := range addrs {
		wg.Go(func() { addrs[i] = ClusterAddrs(t) })
	}
	wg.Wait()
	for i := range addrs {
		if strings.Join(addrs[i], ",") != strings.Join(addrs[0], ",") {
			t.Fatalf("ClusterAddrs differ between calls: %v vs %v", addrs[i], addrs[0])
		}
	}
}

// redisClientFor returns a client for one node, closed at cleanup.
func redisClientFor(t *testing.T, addr string) *redis.Client {
	c := newClient(addr)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"TestX":                 "TestX",
		"TestX/sub_case":        "TestX_sub_case",
		"a{b}*c?[d]\\e f":       "a_b__c__d__e_f",
		strings.Repeat("x", 50): strings.Repeat("x", maxNameLen),
		"héllo":                 "h_llo",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrivateCluster(t *testing.T) {
	t.Parallel()
	cc := PrivateCluster(t)
	ctx := t.Context()
	if len(cc.Options().Addrs) != clusterMasters {
		t.Fatalf("addrs %v", cc.Options().Addrs)
	}
	for _, shared := range ClusterAddrs(t) {
		for _, own := range cc.Options().Addrs {
			if own == shared {
				t.Fatalf("private cluster shares node %s with the shared one", own)
			}
		}
	}
	if err := cc.Set(ctx, "private", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
}

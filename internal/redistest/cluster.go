package redistest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	clusterMasters   = 3
	clusterSlots     = 16384
	clusterReadyWait = 20 * time.Second
)

// cluster is the binary-wide shared Redis Cluster.
type cluster struct {
	nodes []*Srv
	admin *redis.ClusterClient // used by Namespace cleanups
}

var sharedCluster lazy[cluster]

// StartCluster returns a *redis.ClusterClient connected to the binary-wide shared local Redis Cluster with 3 masters
// (no replicas), started lazily on first use: 3 redis-server processes with --cluster-enabled yes,
// --cluster-config-file in their temp dir, --cluster-node-timeout 5000, --save "" --appendonly no, on free
// 127.0.0.1 ports whose bus port (port+10000) is also free. Slots 0..16383 are split into three ranges assigned
// with CLUSTER ADDSLOTSRANGE, every pair of nodes is joined with CLUSTER MEET, and startup waits (at most 20s) until
// every node reports cluster_state:ok and agrees on the slot map (CLUSTER SLOTS lists 3 ranges, one per master).
// Startup takes about 2s, mostly Redis's delay before a new master declares the cluster ok.
// The ClusterClient is closed at t.Cleanup. The cluster is stopped by Main.
func StartCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c := newClusterClient(mustCluster(t).addrs())
	closeAtCleanup(t, c)
	return c
}

// PrivateCluster starts a 3-master Redis Cluster for one test, like the shared
// one StartCluster uses, for tests that pause, slow down or break nodes. It
// returns a client of it; Addrs in the client's options lists the masters. The
// nodes are stopped and their directories removed at t.Cleanup.
func PrivateCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c, err := startCluster()
	if err != nil {
		fatalStart(t, "private Redis Cluster", err)
	}
	t.Cleanup(func() {
		if err := c.destroy(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	cc := newClusterClient(c.addrs())
	closeAtCleanup(t, cc)
	return cc
}

// ClusterAddrs returns the master addresses of the shared cluster (starting it if needed).
func ClusterAddrs(t testing.TB) []string {
	t.Helper()
	return mustCluster(t).addrs()
}

// mustCluster returns the shared cluster, starting it on first use; it fails t when that fails.
func mustCluster(t testing.TB) *cluster {
	t.Helper()
	c, err := sharedCluster.get(startCluster)
	if err != nil {
		fatalStart(t, "shared Redis Cluster", err)
	}
	return c
}

// addrs returns the addresses of the cluster's masters.
func (c *cluster) addrs() []string {
	a := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		a[i] = n.Addr()
	}
	return a
}

// newClusterClient returns a cluster client with the package's timeouts and pool size.
func newClusterClient(addrs []string) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        addrs,
		DialTimeout:  dialTimeout,
		ReadTimeout:  ioTimeout,
		WriteTimeout: ioTimeout,
		PoolSize:     poolSize,
	})
}

// destroy closes the admin client, stops the nodes and removes their directories.
func (c *cluster) destroy() error {
	var errs []error
	if c.admin != nil {
		_ = c.admin.Close()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.destroy(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startCluster starts the nodes and forms the cluster.
func startCluster() (*cluster, error) {
	c := &cluster{}
	// Sequential starts: each node's ports are bound before the next picks its own.
	for range clusterMasters {
		n, err := startSrv(true, nil)
		if err != nil {
			_ = c.destroy()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyWait+10*time.Second)
	defer cancel()
	if err := c.form(ctx); err != nil {
		_ = c.destroy()
		return nil, fmt.Errorf("forming cluster of %v: %w", c.addrs(), err)
	}
	c.admin = newClusterClient(c.addrs())
	// Load the slot map now, so that cleanups do not pay for it.
	if err := c.admin.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.Ping(ctx).Err()
	}); err != nil {
		_ = c.destroy()
		return nil, fmt.Errorf("pinging cluster masters %v: %w", c.addrs(), err)
	}
	return c, nil
}

// form assigns slots, joins the nodes and waits until they all agree that the cluster is ok.
func (c *cluster) form(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = newClient(n.Addr())
		defer clients[i].Close()
	}
	for i, cl := range clients {
		// Distinct config epochs up front avoid epoch-collision rounds (as redis-cli --cluster create does).
		if err := cl.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("CLUSTER SET-CONFIG-EPOCH on %s: %w", c.nodes[i].Addr(), err)
		}
		lo := i * clusterSlots / len(clients)
		hi := (i+1)*clusterSlots/len(clients) - 1
		if err := cl.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE %d %d on %s: %w", lo, hi, c.nodes[i].Addr(), err)
		}
	}
	// Every pair meets directly, rather than waiting for gossip to introduce the later nodes.
	for i, cl := range clients {
		for _, n := range c.nodes[i+1:] {
			if err := cl.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(n.port)).Err(); err != nil {
				return fmt.Errorf("CLUSTER MEET %s from %s: %w", n.Addr(), c.nodes[i].Addr(), err)
			}
		}
	}

	addrs := c.addrs()
	deadline := time.Now().Add(clusterReadyWait)
	for {
		var notReady error
		for i, cl := range clients {
			if err := nodeReady(ctx, cl, addrs); err != nil {
				notReady = fmt.Errorf("node %s: %w", c.nodes[i].Addr(), err)
				break
			}
		}
		if notReady == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", clusterReadyWait, notReady)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last state: %v)", ctx.Err(), notReady)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nodeReady reports why a node does not yet see a healthy cluster made of the masters addrs, or nil.
func nodeReady(ctx context.Context, cl *redis.Client, addrs []string) error {
	n := len(addrs)
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER INFO: %w", err)
	}
	for _, w := range [][2]string{
		{"cluster_known_nodes", strconv.Itoa(n)},
		{"cluster_size", strconv.Itoa(n)},
		{"cluster_slots_assigned", strconv.Itoa(clusterSlots)},
		{"cluster_slots_ok", strconv.Itoa(clusterSlots)},
		{"cluster_state", "ok"},
	} {
		if got := infoField(info, w[0]); got != w[1] {
			return fmt.Errorf("CLUSTER INFO %s is %q, want %q", w[0], got, w[1])
		}
	}
	slots, err := cl.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	if len(slots) != n {
		return fmt.Errorf("CLUSTER SLOTS returns %d ranges, want %d", len(slots), n)
	}
	covered := 0
	seen := make(map[string]bool)
	for _, s := range slots {
		if len(s.Nodes) != 1 || !slices.Contains(addrs, s.Nodes[0].Addr) || seen[s.Nodes[0].Addr] {
			return fmt.Errorf("CLUSTER SLOTS range %d-%d is served by %+v, want one distinct master of %v", s.Start, s.End, s.Nodes, addrs)
		}
		seen[s.Nodes[0].Addr] = true
		covered += s.End - s.Start + 1
	}
	if covered != clusterSlots {
		return fmt.Errorf("CLUSTER SLOTS covers %d slots, want %d", covered, clusterSlots)
	}
	return nil
}

package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	readyTimeout = 10 * time.Second // how long a starting server may take to answer PING
	stopGrace    = 5 * time.Second  // how long Stop waits after SIGTERM before SIGKILL
	startTries   = 5                // attempts when the chosen port turns out to be taken
	logTailLines = 20               // lines of the server log quoted in startup errors
)

// errPortInUse marks startup failures caused by a port that another process took.
var errPortInUse = errors.New("port already in use")

// Srv is a redis-server process started by this package, listening on 127.0.0.1.
// Its methods are safe for concurrent use.
type Srv struct {
	port    int
	dir     string
	cluster bool     // start with cluster mode enabled
	args    []string // extra redis-server arguments

	mu   sync.Mutex
	proc *proc // nil while stopped
}

// proc is one running redis-server process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // result of cmd.Wait, valid once done is closed
}

// Server starts a private redis-server for one test (for tests that restart it, CONFIG SET, SCRIPT FLUSH,
// or break things). Extra redis-server args are appended to the defaults, e.g. "--appendonly", "yes".
// The server is stopped and its directory removed at t.Cleanup.
func Server(t testing.TB, args ...string) *Srv {
	t.Helper()
	s, err := startSrv(false, args)
	if err != nil {
		fatalStart(t, "private redis-server", err)
	}
	t.Cleanup(func() {
		if err := s.destroy(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return s
}

// Addr returns "127.0.0.1:port" of the server.
func (s *Srv) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Dir returns the server's working directory (where its log, RDB and AOF files live).
func (s *Srv) Dir() string { return s.dir }

// Client returns a new client connected to the server, closed at t.Cleanup.
func (s *Srv) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := newClient(s.Addr())
	closeAtCleanup(t, c)
	return c
}

// Stop stops the server: SIGTERM, then wait, then SIGKILL if it has not exited after 5s.
// Stopping a stopped server (or one that exited by itself) does nothing and returns nil;
// an error means the server had to be killed or could not be signalled.
func (s *Srv) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	if p == nil {
		return nil
	}
	return p.stop(stopGrace)
}

// Restart stops the server and starts it again on the same port and directory, with the same
// arguments (so data persisted to AOF, when enabled, is kept). It fails t if the server does not come back.
func (s *Srv) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr(), err)
	}
	var err error
	for try := 0; try < startTries; try++ {
		if err = s.start(); !errors.Is(err, errPortInUse) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the old socket may linger briefly
	}
	if err != nil {
		t.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr(), err)
	}
}

// destroy stops the server and removes its directory.
func (s *Srv) destroy() error {
	err := s.Stop()
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("removing %s: %w", s.dir, rmErr))
	}
	return err
}

// startSrv creates a temp dir and starts a server in it on a free port, retrying with
// another port when the chosen one is taken before the server binds it.
func startSrv(cluster bool, args []string) (*Srv, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errNotFound
	}
	dir, err := os.MkdirTemp("", "rt")
	if err != nil {
		return nil, fmt.Errorf("creating server directory: %w", err)
	}
	s := &Srv{dir: dir, cluster: cluster, args: args}
	for try := 0; try < startTries; try++ {
		if s.port, err = freePort(cluster); err != nil {
			break
		}
		// A fresh log per attempt, so errors quote only this attempt.
		_ = os.Remove(filepath.Join(dir, "redis.log"))
		if err = s.start(); !errors.Is(err, errPortInUse) {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// freePort returns a port on 127.0.0.1 that is free right now. With bus set, port+10000
// (the cluster bus port) is free too.
func freePort(bus bool) (int, error) {
	var lastErr error
	for try := 0; try < 100; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !bus {
			_ = l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			_ = l.Close()
			continue
		}
		lb, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		_ = l.Close()
		if err != nil {
			lastErr = err
			continue
		}
		_ = lb.Close()
		return port, nil
	}
	return 0, fmt.Errorf("finding a free port whose cluster bus port is free too: %v", lastErr)
}

// argv returns the redis-server arguments for s.
func (s *Srv) argv() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.cluster {
		a = append(a,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
		)
	}
	return append(a, s.args...)
}

// start starts the server process and waits until it answers PING.
func (s *Srv) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("redis-server on %s is already running", s.Addr())
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return errNotFound
	}
	// Output before the log file is opened (e.g. configuration errors) goes to stderr.
	out, err := os.Create(filepath.Join(s.dir, "stderr.log"))
	if err != nil {
		return fmt.Errorf("creating stderr log: %w", err)
	}
	cmd := exec.Command(bin, s.argv()...)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	err = startCmd(cmd)
	_ = out.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := s.waitReady(p); err != nil {
		_ = p.stop(time.Second)
		tail := s.logTail()
		if strings.Contains(tail, "already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("redis-server on %s: %w\n--- log tail (%s) ---\n%s", s.Addr(), err, s.dir, tail)
	}
	s.proc = p
	return nil
}

// waitReady waits until the process p answers PING on s's port.
func (s *Srv) waitReady(p *proc) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited during startup (%v)", p.err)
		default:
		}
		err := probe(s.Addr(), p.cmd.Process.Pid)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", readyTimeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// probe checks that the redis-server with process id pid serves addr and answers PING.
// It speaks RESP directly so that no client library retries or logs get in the way.
func probe(addr string, pid int) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, "INFO server\r\nPING\r\n"); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	info, err := readReply(r)
	if err != nil {
		return fmt.Errorf("INFO server: %w", err)
	}
	if got := infoField(info, "process_id"); got != strconv.Itoa(pid) {
		return fmt.Errorf("%s is served by another process (process_id %q, want %d)", addr, got, pid)
	}
	pong, err := readReply(r)
	if err != nil {
		return fmt.Errorf("PING: %w", err)
	}
	if pong != "PONG" {
		return fmt.Errorf("PING: unexpected reply %q", pong)
	}
	return nil
}

// readReply reads one simple-string, error or bulk-string RESP reply.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("server error: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}

// infoField returns the value of field in an INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// logTail returns the last lines of the server's stderr and log file.
func (s *Srv) logTail() string {
	var b strings.Builder
	for _, name := range []string{"stderr.log", "redis.log"} {
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil || len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > logTailLines {
			lines = lines[len(lines)-logTailLines:]
		}
		fmt.Fprintf(&b, "[%s]\n%s\n", name, strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return "(empty)"
	}
	return b.String()
}

// stop sends SIGTERM and waits up to grace for the process to exit, then kills it.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("signalling redis-server (pid %d): %w; killed it", p.cmd.Process.Pid, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("redis-server (pid %d) did not exit within %v of SIGTERM; killed it", p.cmd.Process.Pid, grace)
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limits of starting and stopping the private redis-server.
const (
	serverReadyTimeout = 10 * time.Second
	serverStopGrace    = 5 * time.Second
	serverStartTries   = 5
)

// errPortTaken marks a start that failed because another process bound the
// port between our probe and the server's bind.
var errPortTaken = errors.New("port already in use")

// RedisServer is a redis-server process started by this package. It listens
// on 127.0.0.1 only, keeps no data on disk and lives in its own temporary
// directory, which Stop removes.
type RedisServer struct {
	Addr string // host:port
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // result of Wait; read only after done is closed
}

// StartRedisServer starts bin (redis-server) on a free loopback port and
// waits until it answers PING.
func StartRedisServer(ctx context.Context, bin string) (*RedisServer, error) {
	var last error
	for range serverStartTries {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		s, err := tryStartRedisServer(ctx, bin, port)
		if err == nil {
			return s, nil
		}
		last = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, last
}

// freeLoopbackPort asks the kernel for a port that is free right now.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func tryStartRedisServer(ctx context.Context, bin string, port int) (*RedisServer, error) {
	dir, err := os.MkdirTemp("", "lockbench-redis-")
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "redis.log")
	s := &RedisServer{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:  dir,
		done: make(chan struct{}),
	}
	s.cmd = exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--protected-mode", "yes",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
		"--logfile", logFile,
	)
	s.cmd.SysProcAttr = childProcAttr()

	// The process is started and reaped on one locked OS thread, which thus
	// outlives the child: on Linux the parent-death signal follows the
	// thread that forked, so the server gets SIGTERM if this program dies
	// without running Stop, and never earlier.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}

	if err := s.waitReady(ctx, logFile); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls PING until the server answers, exits or the timeout passes.
func (s *RedisServer) waitReady(ctx context.Context, logFile string) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(serverReadyTimeout)
	for {
		select {
		case <-s.done:
			log, _ := os.ReadFile(logFile)
			if strings.Contains(string(log), "Address already in use") {
				return fmt.Errorf("redis-server on %s: %w", s.Addr, errPortTaken)
			}
			return fmt.Errorf("redis-server on %s exited at start (%v); log:\n%s", s.Addr, s.err, tail(string(log), 20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready after %v: %w", s.Addr, serverReadyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the server (SIGTERM, then SIGKILL after a grace period), waits
// for it to exit and removes its directory. It is safe to call twice.
func (s *RedisServer) Stop() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(serverStopGrace):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	os.RemoveAll(s.dir)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

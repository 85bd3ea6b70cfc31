// Package cli implements the redis-allocator command-line tool.
//
// The entry point is Run, which takes the context, the arguments and the
// output writers instead of reading globals, so every command can be run and
// checked from a test. Each noun lives in its own file (lock.go, demo.go) and
// declares its commands as values of type command: usage, a one-line help,
// a longer description, the positional arguments it needs and an example.
// Every command parses its flags with a fresh flag.FlagSet and returns an
// error rather than exiting; Run turns errors into exit codes.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/lock"
)

// Exit codes returned by Run.
const (
	// ExitOK means the command succeeded.
	ExitOK = 0
	// ExitFailure means the command was well formed but failed at run time:
	// Redis unreachable, a lock not obtained or not held, an interrupt.
	ExitFailure = 1
	// ExitUsage means the command line was malformed: unknown command or
	// flag, wrong number of arguments, bad flag value.
	ExitUsage = 2
)

// DefaultPrefix is the key namespace used when --prefix is not given.
const DefaultPrefix = "redis-allocator"

const progName = "redis-allocator"

// pingTimeout bounds the first round trip to a Redis server, so that a wrong
// address fails fast with a clear message.
const pingTimeout = 5 * time.Second

// Run executes the command line args (without the program name), writing
// normal output to stdout and diagnostics to stderr, and returns the exit
// code: ExitOK, ExitFailure or ExitUsage. It never calls os.Exit and stops
// early when ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, g: globals{prefix: DefaultPrefix}}
	err := e.dispatch(ctx, args)
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, errHelpShown):
		return ExitOK
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintf(stderr, "%s: %s\n", progName, ue.msg)
		}
		if ue.cmd != nil {
			fmt.Fprintf(stderr, "usage: %s\n", ue.cmd.usage())
			fmt.Fprintf(stderr, "Run '%s help %s' for details.\n", progName, ue.cmd.name)
		} else {
			fmt.Fprintf(stderr, "Run '%s help' for the list of commands.\n", progName)
		}
		return ExitUsage
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "%s: interrupted: %v\n", progName, err)
		return ExitFailure
	default:
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return ExitFailure
	}
}

// errHelpShown reports that help was requested and printed; Run exits 0.
var errHelpShown = errors.New("help shown")

// usageError is a malformed command line. cmd, when set, is the command
// whose usage line Run prints; msg may be empty when the flag package has
// already printed the problem.
type usageError struct {
	cmd *command
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(cmd *command, format string, a ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, a...)}
}

// command is one runnable command, such as "lock acquire" or "demo".
type command struct {
	name    string   // full name: noun, then verb if any ("lock acquire")
	args    []string // names of the required positional arguments
	anyArgs bool     // accept any number of positional arguments instead
	flags   string   // flag synopsis for the usage line ("[--ttl 30s]")
	short   string   // one-line description
	long    string   // further description for "help <command>"
	example string   // one example command line
	// setup declares the command's own flags on fs and returns the function
	// that runs the command once fs is parsed. Help calls it only to list
	// the flags.
	setup func(fs *flag.FlagSet) runFunc
}

// runFunc runs command c with its positional arguments.
type runFunc func(ctx context.Context, e *env, c *command, args []string) error

// exec parses args (what follows the command name) and runs c.
func (e *env) exec(ctx context.Context, c *command, args []string) error {
	fs := e.flagSet(c)
	run := c.setup(fs)
	pos, err := e.parse(c, fs, args)
	if err != nil {
		return err
	}
	return run(ctx, e, c, pos)
}

// usage returns the usage line: program, name, arguments and flags.
func (c *command) usage() string {
	parts := append([]string{progName, c.name}, c.args...)
	if c.flags != "" {
		parts = append(parts, c.flags)
	}
	return strings.Join(parts, " ")
}

// group is a noun with several commands ("lock acquire", "lock release").
type group struct {
	name  string
	short string
}

// commands returns every command in the order help lists them. It is a
// function rather than a package variable because the help command refers
// to the list.
func commands() []*command {
	cs := lockCommands()
	cs = append(cs, demoCommand(), helpCommand())
	return cs
}

// groups returns the nouns that have several commands.
func groups() []group {
	return []group{lockGroup()}
}

// env is what a command runs with: the output writers and the global flags.
type env struct {
	stdout, stderr io.Writer
	g              globals
}

// globals are the flags every command accepts, before or after its name.
type globals struct {
	redisURL string
	cluster  string
	prefix   string
}

var globalFlagNames = map[string]bool{"redis-url": true, "cluster": true, "prefix": true}

// register adds the global flags to fs, bound to g, keeping the values set
// so far as defaults.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.redisURL, "redis-url", g.redisURL,
		"Redis server URL, e.g. redis://localhost:6379/0 (default: an embedded miniredis)")
	fs.StringVar(&g.cluster, "cluster", g.cluster,
		"comma-separated host:port list of Redis Cluster nodes (instead of --redis-url)")
	fs.StringVar(&g.prefix, "prefix", g.prefix, "key namespace")
}

// dispatch parses the global flags and runs the command named by the
// remaining arguments.
func (e *env) dispatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {}
	e.g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			e.printUsage(e.stdout)
			return errHelpShown
		}
		return &usageError{}
	}
	args = fs.Args()
	if len(args) == 0 {
		e.printUsage(e.stderr)
		return &usageError{msg: "no command given"}
	}
	if c, rest := findCommand(args); c != nil {
		return e.exec(ctx, c, rest)
	}
	for _, g := range groups() {
		if args[0] != g.name {
			continue
		}
		if len(args) > 1 && isHelpArg(args[1]) {
			e.printGroupHelp(e.stdout, g)
			return errHelpShown
		}
		e.printGroupHelp(e.stderr, g)
		if len(args) == 1 {
			return &usageError{msg: fmt.Sprintf("%s: missing subcommand", g.name)}
		}
		return &usageError{msg: fmt.Sprintf("%s: unknown subcommand %q", g.name, args[1])}
	}
	return &usageError{msg: fmt.Sprintf("unknown command %q", args[0])}
}

// findCommand returns the command named by the first one or two words of
// args, and the arguments that follow the name.
func findCommand(args []string) (*command, []string) {
	for _, c := range commands() {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c, args[len(words):]
		}
	}
	return nil, nil
}

func isHelpArg(s string) bool {
	return s == "help" || s == "-h" || s == "-help" || s == "--help"
}

// flagSet returns a fresh flag set for c that also accepts the global flags.
// It prints flag errors to stderr; Run prints the usage line.
func (e *env) flagSet(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {}
	e.g.register(fs)
	return fs
}

// parse parses args with fs, allowing flags before, between and after the
// positional arguments ("--" ends the flags), and checks that exactly
// len(c.args) positional arguments were given. -h prints c's help.
func (e *env) parse(c *command, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				e.printCommandHelp(e.stdout, c, fs)
				return nil, errHelpShown
			}
			return nil, &usageError{cmd: c} // the flag package printed the problem
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...) // everything after "--" is positional
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case c.anyArgs:
	case len(pos) < len(c.args):
		return nil, usageErrorf(c, "%s: missing %s", c.name, strings.Join(c.args[len(pos):], " "))
	case len(pos) > len(c.args):
		return nil, usageErrorf(c, "%s: unexpected argument %q", c.name, pos[len(c.args)])
	}
	return pos, nil
}

// helpCommand returns the "help" command.
func helpCommand() *command {
	return &command{
		name:    "help",
		anyArgs: true,
		flags:   "[COMMAND]",
		short:   "Show the list of commands, or the details of one command.",
		example: progName + " help lock acquire",
		setup: func(*flag.FlagSet) runFunc {
			return func(_ context.Context, e *env, _ *command, args []string) error {
				if len(args) == 0 {
					e.printUsage(e.stdout)
					return errHelpShown
				}
				if c, rest := findCommand(args); c != nil && len(rest) == 0 {
					e.printCommandHelp(e.stdout, c, nil)
					return errHelpShown
				}
				if len(args) == 1 {
					for _, g := range groups() {
						if g.name == args[0] {
							e.printGroupHelp(e.stdout, g)
							return errHelpShown
						}
					}
				}
				return &usageError{msg: fmt.Sprintf("help: unknown command %q", strings.Join(args, " "))}
			}
		},
	}
}

// printUsage writes the overview: every command with its description and
// an example, then the global flags and exit codes.
func (e *env) printUsage(w io.Writer) {
	fmt.Fprintf(w, "%s: distributed locks on Redis, from the command line.\n\n", progName)
	fmt.Fprintf(w, "Usage:\n  %s [global flags] COMMAND [arguments] [flags]\n\nCommands:\n", progName)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %s\n      %s\n      e.g. %s\n", strings.TrimPrefix(c.usage(), progName+" "), c.short, c.example)
	}
	fmt.Fprint(w, "\nGlobal flags (before or after the command):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  --redis-url URL\tRedis server, e.g. redis://localhost:6379/0 or rediss://user:pass@host:6380")
	fmt.Fprintln(tw, "  \t(default: start an embedded miniredis on 127.0.0.1 for this run only)")
	fmt.Fprintln(tw, "  --cluster ADDRS\tRedis Cluster nodes as host:port,host:port (instead of --redis-url)")
	fmt.Fprintf(tw, "  --prefix NAME\tkey namespace: keys are NAME|lock:KEY (default %q)\n", DefaultPrefix)
	_ = tw.Flush()
	fmt.Fprintf(w, "\nExit status: %d ok, %d runtime failure (including a lock not obtained), %d usage error.\n", ExitOK, ExitFailure, ExitUsage)
	fmt.Fprintf(w, "Run '%s help COMMAND' for the details of one command.\n", progName)
}

// printGroupHelp writes the commands of one noun.
func (e *env) printGroupHelp(w io.Writer, g group) {
	fmt.Fprintf(w, "%s: %s\n\nCommands:\n", g.name, g.short)
	for _, c := range commands() {
		if strings.HasPrefix(c.name, g.name+" ") {
			fmt.Fprintf(w, "  %s\n      %s\n      e.g. %s\n", strings.TrimPrefix(c.usage(), progName+" "), c.short, c.example)
		}
	}
	fmt.Fprintf(w, "\nRun '%s help %s SUBCOMMAND' for details.\n", progName, g.name)
}

// printCommandHelp writes the usage, description, flags and example of c.
// fs holds c's flags; when nil, a fresh set is declared with c.setup.
func (e *env) printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	if fs == nil {
		fs = flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.setup(fs)
	}
	fmt.Fprintf(w, "usage: %s\n\n%s\n", c.usage(), c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	var own []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !globalFlagNames[f.Name] {
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range own {
			typ, usage := flag.UnquoteUsage(f)
			def := ""
			if f.DefValue != "" && f.DefValue != "false" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(tw, "  --%s %s\t%s%s\n", f.Name, typ, usage, def)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "\nExample:\n  %s\n\nGlobal flags --redis-url, --cluster and --prefix are accepted too; see '%s help'.\n", c.example, progName)
}

// conn is an open connection to the Redis server the global flags name.
type conn struct {
	client redis.UniversalClient
	desc   string // where the server is, for messages
	mini   *miniredis.Miniredis
}

// Close closes the client and stops the embedded server, if any.
func (c *conn) Close() error {
	err := c.client.Close()
	if c.mini != nil {
		c.mini.Close()
	}
	return err
}

// connect opens the client the global flags describe, starting an embedded
// miniredis when neither --redis-url nor --cluster is given, and checks it
// with a PING.
func (e *env) connect(ctx context.Context, c *command) (*conn, error) {
	var cn conn
	switch {
	case e.g.redisURL != "" && e.g.cluster != "":
		return nil, usageErrorf(c, "give either --redis-url or --cluster, not both")
	case e.g.cluster != "":
		var addrs []string
		for a := range strings.SplitSeq(e.g.cluster, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			return nil, usageErrorf(c, "--cluster needs at least one host:port")
		}
		cn.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		cn.desc = "Redis Cluster " + strings.Join(addrs, ",")
	case e.g.redisURL != "":
		opt, err := redis.ParseURL(e.g.redisURL)
		if err != nil {
			return nil, usageErrorf(c, "bad --redis-url: %v", err)
		}
		cn.client = redis.NewClient(opt)
		cn.desc = redactURL(e.g.redisURL)
	default:
		m, err := miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("start embedded miniredis: %w", err)
		}
		// Real Redis expires keys as time passes; miniredis does so only
		// when asked to follow the clock.
		m.ClockTTL(true)
		cn.mini = m
		cn.client = redis.NewClient(&redis.Options{Addr: m.Addr()})
		cn.desc = "embedded miniredis at " + m.Addr()
		fmt.Fprintf(e.stderr, "no --redis-url: using an embedded Redis-compatible server (miniredis) at %s; its data is gone when this command exits\n", m.Addr())
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := cn.client.Ping(pctx).Err(); err != nil {
		_ = cn.Close()
		return nil, fmt.Errorf("cannot reach %s: %w", cn.desc, err)
	}
	return &cn, nil
}

// redactURL hides the password of a Redis URL.
func redactURL(s string) string {
	opt, err := redis.ParseURL(s)
	if err != nil || opt.Password == "" {
		return s
	}
	return strings.Replace(s, ":"+opt.Password+"@", ":***@", 1)
}

// newLock connects and returns the lock namespace the global flags name.
func (e *env) newLock(ctx context.Context, c *command) (*lock.Lock, *conn, error) {
	if e.g.prefix == "" {
		return nil, nil, usageErrorf(c, "--prefix must not be empty")
	}
	cn, err := e.connect(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	l, err := lock.New(cn.client, e.g.prefix)
	if err != nil {
		_ = cn.Close()
		return nil, nil, err
	}
	return l, cn, nil
}

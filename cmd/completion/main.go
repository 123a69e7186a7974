// Command completion inspects and repairs a completion stream: its backlog,
// consumer groups, pending entries and dead letters. It redrives dead
// letters to the stream, purges them, publishes test completions, follows
// the stream live and serves a web dashboard (completion serve).
//
//	go run ./cmd/completion help
//	go run ./cmd/completion -addr localhost:6379 info
//
// Exit status: 0 on success, 1 when the command failed (Redis unreachable,
// a Redis error), 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
	"github.com/streamrelay/completion/internal/safetext"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// quietLogger drops go-redis's own log lines (such as each failed dial);
// the command reports the error that ends it.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func main() {
	redis.SetLogger(quietLogger{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// globals are the flags every command accepts, before or after its name.
type globals struct {
	addr       string
	stream     string
	partition  string // "I/N": partition I of a stream split into N
	partitions int    // N > 1: all partitions of a stream split into N
	group      string
	json       bool
	timeout    time.Duration
}

func defaultGlobals() globals {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		addr = "localhost:6379"
	}
	return globals{addr: addr, stream: completion.DefaultStream, group: completion.DefaultGroup, timeout: 10 * time.Second}
}

// register adds the global flags to fs, with their current values as
// defaults, so that a command's flag set can override what came before the
// command name.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "Redis `address` (host:port, or a redis:// URL); default $REDIS_ADDR or localhost:6379")
	fs.StringVar(&g.stream, "stream", g.stream, "the completion `stream` key")
	fs.StringVar(&g.partition, "partition", g.partition, "`I/N`: work on partition I (from 0) of the stream split into N partitions (Config.Partitions)")
	fs.IntVar(&g.partitions, "partitions", g.partitions, "`N`: the stream is split into N partitions (Config.Partitions); work on all of them at once")
	fs.StringVar(&g.group, "group", g.group, "the consumer `group`")
	fs.BoolVar(&g.json, "json", g.json, "print JSON instead of tables")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "give up after this `duration` (not for tail)")
}

// usageError is a command line the program cannot act on: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// env is what a command runs with.
type env struct {
	g      globals
	stdout io.Writer
	stderr io.Writer
	in     *inspect.Inspector
	client *redis.Client // the connection in, for commands that need more
}

// partitioned reports whether the command works on all partitions of a
// partitioned stream (-partitions N, N > 1).
func (e *env) partitioned() bool { return e.g.partitions > 1 }

// checkRefs reports, as a usage error, a dead-letter id with a partition
// ("2/1700000000000-0") that the stream does not have: any without
// -partitions, one beyond N-1 with -partitions N.
func (e *env) checkRefs(ids []string) error {
	for _, id := range ids {
		p, _, ok := strings.Cut(strings.TrimPrefix(id, "("), "/")
		if !ok {
			continue
		}
		if !e.partitioned() {
			return usagef("%q names a partition; give -partitions N for a partitioned stream", id)
		}
		if i, err := strconv.Atoi(p); err != nil || i >= e.g.partitions {
			return usagef("%q: the partition must be from 0 to %d (-partitions %d)", id, e.g.partitions-1, e.g.partitions)
		}
	}
	return nil
}

// run is the program: it parses args (without the program name), runs the
// command and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := defaultGlobals()
	gfs := flag.NewFlagSet("completion", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	g.register(gfs)
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout)
			return exitOK
		}
		return usageFailure(stderr, "", err)
	}
	rest := gfs.Args()
	if len(rest) == 0 {
		return usageFailure(stderr, "", errors.New("no command given"))
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return help(stdout, stderr, rest)
	}
	cmd, ok := commandNamed(name)
	if !ok {
		return usageFailure(stderr, "", fmt.Errorf("unknown command %q", name))
	}
	act, code := prepare(cmd, &g, rest, stdout, stderr)
	if act == nil {
		return code
	}
	return execute(ctx, cmd, g, act, stdout, stderr)
}

// help prints the help, or one command's.
func help(stdout, stderr io.Writer, args []string) int {
	if len(args) == 0 {
		printHelp(stdout)
		return exitOK
	}
	cmd, ok := commandNamed(args[0])
	if !ok {
		return usageFailure(stderr, "", fmt.Errorf("unknown command %q", args[0]))
	}
	printCommandHelp(stdout, cmd)
	return exitOK
}

// prepare parses cmd's flags and arguments into g and the action; a nil
// action means the program ends with the code returned.
func prepare(cmd *command, g *globals, args []string, stdout, stderr io.Writer) (action, int) {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	check := cmd.setup(fs)
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(stdout, cmd)
			return nil, exitOK
		}
		return nil, usageFailure(stderr, cmd.name, err)
	}
	act, err := check(positional)
	if err != nil {
		return nil, usageFailure(stderr, cmd.name, err)
	}
	if g.timeout <= 0 {
		return nil, usageFailure(stderr, cmd.name, fmt.Errorf("-timeout is %v; it must be positive", g.timeout))
	}
	return act, exitOK
}

// execute connects to Redis and runs the action.
func execute(ctx context.Context, cmd *command, g globals, act action, stdout, stderr io.Writer) int {
	name := cmd.name
	stream, err := g.streamKey()
	if err != nil {
		return usageFailure(stderr, name, err)
	}
	client, err := newClient(g.addr)
	if err != nil {
		return usageFailure(stderr, name, err)
	}
	defer client.Close()
	in, err := inspect.New(client, inspect.Config{Stream: stream, Group: g.group, Partitions: g.partitions})
	if err != nil {
		return usageFailure(stderr, name, err)
	}
	if !cmd.endless {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	e := &env{g: g, stdout: stdout, stderr: stderr, in: in, client: client}
	if err := act(ctx, e); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			return usageFailure(stderr, name, err)
		}
		// The library's errors name their package and operation; here the
		// command's name says both.
		msg := strings.TrimPrefix(err.Error(), "inspect: ")
		msg = strings.TrimPrefix(msg, name+": ")
		fmt.Fprintf(stderr, "completion %s: %s\n", name, safetext.Escape(msg))
		return exitError
	}
	return exitOK
}

// usageFailure reports a usage error and returns exit status 2.
func usageFailure(stderr io.Writer, command string, err error) int {
	msg := safetext.Escape(err.Error())
	if command == "" {
		fmt.Fprintf(stderr, "completion: %s\nRun 'completion help' for usage.\n", msg)
	} else {
		fmt.Fprintf(stderr, "completion %s: %s\nRun 'completion help %s' for usage.\n", command, msg, safetext.Escape(command))
	}
	return exitUsage
}

// parseInterspersed parses flags anywhere among the positional arguments
// ("redrive ID1 ID2 -json"), which package flag alone stops at. Everything
// after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// newClient connects to addr: host:port, or a redis:// or rediss:// URL
// (with user, password and database number). Its errors never show the
// password.
func newClient(addr string) (*redis.Client, error) {
	var opts *redis.Options
	if strings.Contains(addr, "://") {
		o, err := redis.ParseURL(addr)
		if err != nil {
			return nil, fmt.Errorf("-addr %q: %s", redactURL(addr), redactPassword(err.Error(), addr))
		}
		opts = o
	} else {
		if addr == "" {
			return nil, errors.New("-addr is empty")
		}
		opts = &redis.Options{Addr: addr}
	}
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opts), nil
}

// redactURL returns addr with the password of its user info replaced by
// "xxxxx", also when addr does not parse as a URL.
func redactURL(addr string) string {
	if u, err := url.Parse(addr); err == nil {
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return addr
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return addr
	}
	if user, _, hasPassword := strings.Cut(userinfo, ":"); hasPassword {
		return scheme + "://" + user + ":xxxxx@" + host
	}
	return addr
}

// redactPassword replaces the password of addr's user info, wherever it
// appears in text, with "xxxxx".
func redactPassword(text, addr string) string {
	_, rest, _ := strings.Cut(addr, "://")
	userinfo, _, ok := strings.Cut(rest, "@")
	if !ok {
		return text
	}
	if _, password, ok := strings.Cut(userinfo, ":"); ok && password != "" {
		text = strings.ReplaceAll(text, password, "xxxxx")
		if p, err := url.PathUnescape(password); err == nil && p != "" {
			text = strings.ReplaceAll(text, p, "xxxxx")
		}
	}
	return text
}

// streamKey returns the key to work on: the stream, or with -partition I/N
// its partition I (completion.PartitionStream), whose default dead-letter
// stream is then the partition's, as for a partitioned Consumer. With
// -partitions N it is the stream's name, of which the Inspector then works
// on all N partitions.
func (g *globals) streamKey() (string, error) {
	if g.stream == "" {
		return "", errors.New("-stream is empty; name the stream (the default is " + completion.DefaultStream + ")")
	}
	if g.partitions != 0 {
		switch {
		case g.partition != "":
			return "", fmt.Errorf("give -partition I/N (one partition) or -partitions N (all of them), not both")
		case g.partitions < 0 || g.partitions > completion.MaxPartitions:
			return "", fmt.Errorf("-partitions is %d; want 1 to %d (0: not partitioned)", g.partitions, completion.MaxPartitions)
		case strings.ContainsAny(g.stream, "{}") && g.partitions > 1:
			return "", fmt.Errorf("-partitions: stream %q has a {hash tag}; partitioned streams have none (give the name consumers have in Config.Stream)", g.stream)
		}
		return g.stream, nil
	}
	if g.partition == "" {
		return g.stream, nil
	}
	var i, n int
	if _, err := fmt.Sscanf(g.partition, "%d/%d", &i, &n); err != nil || fmt.Sprintf("%d/%d", i, n) != g.partition {
		return "", fmt.Errorf("-partition %q: want I/N, e.g. 0/6", g.partition)
	}
	if n < 1 || n > completion.MaxPartitions || i < 0 || i >= n {
		return "", fmt.Errorf("-partition %q: want 0 <= I < N <= %d", g.partition, completion.MaxPartitions)
	}
	if strings.ContainsAny(g.stream, "{}") && n > 1 {
		return "", fmt.Errorf("-partition: stream %q has a {hash tag}; partitioned streams have none", g.stream)
	}
	return completion.PartitionStream(g.stream, i, n), nil
}

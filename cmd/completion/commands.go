package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
)

// action runs a command whose command line has been checked.
type action func(ctx context.Context, e *env) error

// command is one subcommand.
type command struct {
	name    string
	usage   string // the arguments after the name
	summary string // one line
	about   string // a paragraph for "help <name>"
	example string // one or more example command lines
	endless bool   // runs until interrupted: -timeout does not apply

	// setup registers the command's own flags on fs and returns the
	// function that checks the positional arguments, once the flags are
	// parsed, and returns the action.
	setup func(fs *flag.FlagSet) func(args []string) (action, error)
}

var commands = []*command{
	{
		name:    "info",
		summary: "show the stream, its consumer groups and consumers, and the dead letters",
		about: `Shows the stream's length and first and last entry ids, each consumer
group with its pending count, its lag (entries not yet delivered to the
group; "?" when Redis cannot tell) and last delivered id, each consumer with
its pending count and idle time, and how many dead letters there are.
It only reads: consumers are not disturbed. With -partitions N it shows the
totals over the N partitions (pending counts, lags and consumers merged),
then one line per partition: its key, entries, the -group group's pending
count and lag, and its dead letters; -json lists each partition in full.`,
		example: "completion info\ncompletion -stream chat:completions info -json\ncompletion -stream chat:completions -partitions 6 info",
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			return func(args []string) (action, error) {
				if len(args) > 0 {
					return nil, usagef("info takes no arguments, got %q", args)
				}
				return func(ctx context.Context, e *env) error {
					si, err := e.in.Info(ctx)
					if err != nil {
						return err
					}
					return e.print(infoView(si), func() error { return writeInfo(e.stdout, si, e.g.group) })
				}, nil
			}
		},
	},
	{
		name:    "pending",
		usage:   "[-count N]",
		summary: "list entries delivered to the group (-group) and not yet acknowledged",
		about: `Lists the group's pending entries, oldest first: the entry id, the
consumer holding it, how long since it was last delivered, and how many
times it was delivered. An entry delivered many times is failing; one with a
long idle time is held by a consumer that may be dead (another consumer
takes it over after the claim min-idle time). With -partitions N it merges
the N partitions' pending entries, oldest first, each named PARTITION/ID.`,
		example: "completion pending -count 50\ncompletion -group chat_consumers pending\ncompletion -partitions 6 pending",
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			count := fs.Int("count", 20, "show at most `N` entries")
			return func(args []string) (action, error) {
				if len(args) > 0 {
					return nil, usagef("pending takes no arguments, got %q", args)
				}
				if *count <= 0 {
					return nil, usagef("-count is %d; it must be positive", *count)
				}
				return func(ctx context.Context, e *env) error {
					entries, err := e.in.Pending(ctx, inspect.PendingQuery{Group: e.g.group, Count: *count})
					if err != nil {
						if strings.Contains(err.Error(), "NOGROUP") {
							return fmt.Errorf("%w (choose the group with -group)", err)
						}
						return err
					}
					return e.print(pendingView(entries, e.partitioned()), func() error {
						return writePending(e.stdout, e.g.group, entries, *count, e.partitioned())
					})
				}, nil
			}
		},
	},
	{
		name:    "dead",
		usage:   "[-count N] [-start ID] [-reason R]",
		summary: "list dead letters: entries consumers gave up on, with the reason",
		about: `Lists the dead-letter stream ("{STREAM}:dead", or "STREAM:dead" when the
key has a {hash tag} already), oldest first: the dead letter's id (what
redrive and purge take), when and why the entry was dead-lettered, its
delivery count, its id in the stream, its operation and task, and the
error. Page with -start: an id prefixed with "(" starts after that id.
-reason shows only dead letters of one reason (task_not_found, malformed,
oversize, invalid_task, permanent_error, max_deliveries, task_mismatch).
With -partitions N it merges the dead-letter streams of the N partitions,
oldest first, and names each dead letter PARTITION/ID (e.g.
2/1700000000000-3): the form redrive, purge and -start take.`,
		example: "completion dead\ncompletion dead -count 10 -start '(1700000000000-3'\ncompletion -partitions 6 dead -start '(2/1700000000000-3'",
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			count := fs.Int("count", 20, "show at most `N` dead letters")
			start := fs.String("start", "-", "start at this dead-letter `ID` (\"-\": the oldest; \"(ID\": after ID)")
			reason := fs.String("reason", "", "show only the dead letters of this `reason` (e.g. task_not_found)")
			return func(args []string) (action, error) {
				if len(args) > 0 {
					return nil, usagef("dead takes no arguments, got %q", args)
				}
				if *count <= 0 {
					return nil, usagef("-count is %d; it must be positive", *count)
				}
				return func(ctx context.Context, e *env) error {
					if err := e.checkRefs([]string{*start}); err != nil {
						return err
					}
					page, err := e.in.DeadLetters(ctx, inspect.DeadLetterQuery{Start: *start, Count: *count, Reason: *reason})
					if err != nil {
						return err
					}
					return e.print(deadView(page.DeadLetters, e.partitioned()), func() error { return writeDead(e.stdout, page, *reason, e.partitioned()) })
				}, nil
			}
		},
	},
	{
		name:    "redrive",
		usage:   "(ID... | -all | -reason R | -range START END) [-limit N]",
		summary: "move dead letters back to the stream, to be handled again",
		about: `Moves dead letters back to the stream: each is appended to the stream
with its original fields (as a new entry, delivered to every group again)
and deleted from the dead-letter stream. Give full dead-letter ids (as
"dead" lists them: ms-seq), or -all, or -reason R (every dead letter of that
reason), or -range START END (both included; "-" and "+" are the oldest and
the newest; a bare millisecond covers all of it). -limit caps how many -all
or -range move. Dead letters of oversize entries hold only an excerpt and
are left in place (purge them when done). On a
single Redis node each entry moves exactly once even when two people
redrive at the same time. Fix the cause first (register the task, deploy
the handler fix), or the entries come straight back. With -partitions N
each dead letter goes back into its own partition; give ids as "dead"
lists them, PARTITION/ID (a bare ID is looked for in every partition, and
refused if several have it), and -range START END runs over all partitions
in the order "dead" lists them.`,
		example: "completion redrive 1700000000000-0 1700000000000-1\ncompletion redrive -range - 1700000000999-0\ncompletion redrive -all\ncompletion -partitions 6 redrive 2/1700000000000-0 5/1700000000000-0",
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			all := fs.Bool("all", false, "redrive every dead letter")
			reason := fs.String("reason", "", "redrive every dead letter of this `reason`")
			rng := fs.Bool("range", false, "redrive the dead letters from START to END (two arguments)")
			limit := fs.Int("limit", 0, "with -all or -range: move at most `N` (0: no limit)")
			return func(args []string) (action, error) {
				var do func(ctx context.Context, in *inspect.Inspector) (int, error)
				var refs []string // checked against -partitions when it runs
				switch {
				case *all && *rng, *all && *reason != "", *rng && *reason != "":
					return nil, usagef("give one of -all, -reason and -range")
				case *reason != "":
					if len(args) > 0 || *limit != 0 {
						return nil, usagef("-reason takes no ids and no -limit, got %q", args)
					}
					do = func(ctx context.Context, in *inspect.Inspector) (int, error) {
						return in.RedriveReason(ctx, *reason)
					}
				case *limit < 0:
					return nil, usagef("-limit is %d; it must not be negative", *limit)
				case *all:
					if len(args) > 0 {
						return nil, usagef("-all takes no ids, got %q", args)
					}
					do = func(ctx context.Context, in *inspect.Inspector) (int, error) {
						return in.RedriveRange(ctx, "-", "+", *limit)
					}
				case *rng:
					if len(args) != 2 {
						return nil, usagef("-range takes two arguments, START and END, got %q", args)
					}
					if err := checkIDs(args, true); err != nil {
						return nil, err
					}
					refs = args
					do = func(ctx context.Context, in *inspect.Inspector) (int, error) {
						return in.RedriveRange(ctx, args[0], args[1], *limit)
					}
				case len(args) == 0:
					return nil, usagef("give the ids of the dead letters to redrive, or -all, -reason R or -range START END")
				case *limit != 0:
					return nil, usagef("-limit goes with -all or -range, not with ids")
				default:
					if err := checkIDs(args, false); err != nil {
						return nil, err
					}
					refs = args
					do = func(ctx context.Context, in *inspect.Inspector) (int, error) {
						return in.Redrive(ctx, args...)
					}
				}
				return func(ctx context.Context, e *env) error {
					if err := e.checkRefs(refs); err != nil {
						return err
					}
					n, err := do(ctx, e.in)
					if err != nil {
						if n > 0 || errors.Is(err, inspect.ErrNotRedrivable) {
							fmt.Fprintf(e.stderr, "completion redrive: moved %d dead %s\n", n, plural(n, "letter", "letters"))
						}
						return err
					}
					if e.partitioned() {
						return e.print(countView{Redriven: &n, Stream: e.g.stream, Partitions: e.g.partitions}, func() error {
							_, err := fmt.Fprintf(e.stdout, "Moved %d dead %s back into %s of %s (%d partitions).\n",
								n, plural(n, "letter", "letters"), plural(n, "its partition", "their partitions"), e.g.stream, e.g.partitions)
							return err
						})
					}
					return e.print(countView{Redriven: &n, Stream: e.g.stream}, func() error {
						_, err := fmt.Fprintf(e.stdout, "Moved %d dead %s back to %s.\n", n, plural(n, "letter", "letters"), e.g.stream)
						return err
					})
				}, nil
			}
		},
	},
	{
		name:    "purge",
		usage:   "(ID... | -all -yes)",
		summary: "delete dead letters for good",
		about: `Deletes dead letters. Give dead-letter ids, or -all to delete every dead
letter; -all asks no question, so it needs -yes as well. What is purged is
gone: look at it with "dead" first, or redrive it. With -partitions N give
ids as "dead" lists them, PARTITION/ID (a bare ID is looked for in every
partition, and refused if several have it); -all empties the dead-letter
streams of all N partitions.`,
		example: "completion purge 1700000000000-0\ncompletion purge -all -yes\ncompletion -partitions 6 purge 2/1700000000000-0",
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			all := fs.Bool("all", false, "delete every dead letter (needs -yes)")
			yes := fs.Bool("yes", false, "confirm -all")
			return func(args []string) (action, error) {
				var do func(ctx context.Context, in *inspect.Inspector) (int, error)
				var refs []string // checked against -partitions when it runs
				switch {
				case *all && len(args) > 0:
					return nil, usagef("-all takes no ids, got %q", args)
				case *all && !*yes:
					return nil, usagef("-all deletes every dead letter for good; add -yes to confirm")
				case *all:
					do = func(ctx context.Context, in *inspect.Inspector) (int, error) { return in.PurgeAll(ctx) }
				case len(args) == 0:
					return nil, usagef("give the ids of the dead letters to delete, or -all -yes")
				default:
					if err := checkIDs(args, false); err != nil {
						return nil, err
					}
					refs = args
					do = func(ctx context.Context, in *inspect.Inspector) (int, error) { return in.Purge(ctx, args...) }
				}
				return func(ctx context.Context, e *env) error {
					if err := e.checkRefs(refs); err != nil {
						return err
					}
					n, err := do(ctx, e.in)
					if err != nil {
						return err
					}
					if e.partitioned() {
						where := fmt.Sprintf("the dead-letter streams of the %d partitions of %s", e.g.partitions, e.g.stream)
						if dead := e.in.Config().DeadLetterStream; dead != "" {
							where = dead
						}
						return e.print(countView{Purged: &n, Stream: e.g.stream, Partitions: e.g.partitions}, func() error {
							_, err := fmt.Fprintf(e.stdout, "Deleted %d dead %s from %s.\n", n, plural(n, "letter", "letters"), where)
							return err
						})
					}
					dead := e.in.DeadLetterStreams()[0]
					return e.print(countView{Purged: &n, Stream: dead}, func() error {
						_, err := fmt.Fprintf(e.stdout, "Deleted %d dead %s from %s.\n", n, plural(n, "letter", "letters"), text(dead))
						return err
					})
				}, nil
			}
		},
	},
	{
		name:    "publish",
		usage:   "-op OP -task TASK [-success=false -error TEXT | -result JSON]",
		summary: "publish a test completion to the stream",
		about: `Publishes a completion, exactly as a producer does (XADD ... MAXLEN ~ 10000
* data <json>), and prints its entry id: a way to check end to end that
consumers pick completions up. -result is raw JSON: an object, a string
literal or null. A failure takes -success=false and -error. With -partitions N
it goes to the partition of the task, as producers using WithPartitions(N)
pick it.`,
		example: "completion publish -op op-1 -task t-1 -result '{\"answer\":42}'\ncompletion publish -op op-2 -task t-1 -success=false -error 'tool crashed'\ncompletion -partitions 6 publish -op op-3 -task t-3",
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			op := fs.String("op", "", "the operation id (required)")
			task := fs.String("task", "", "the task id (required)")
			success := fs.Bool("success", true, "whether the operation succeeded")
			errText := fs.String("error", "", "the failure `text` (with -success=false)")
			result := fs.String("result", "", "the result as `JSON`: an object, a \"string\" or null")
			return func(args []string) (action, error) {
				switch {
				case len(args) > 0:
					return nil, usagef("publish takes no arguments, got %q", args)
				case *op == "" || *task == "":
					return nil, usagef("-op and -task are required")
				case *errText != "" && *success:
					return nil, usagef("-error goes with -success=false")
				case *errText != "" && *result != "":
					return nil, usagef("give -result or -error, not both")
				}
				msg := completion.Message{OperationID: *op, TaskID: *task, Success: *success, Error: *errText}
				if *result != "" {
					msg.Result = json.RawMessage(*result)
				}
				if err := msg.Validate(); err != nil {
					if errors.Is(err, completion.ErrMalformed) && *result != "" {
						return nil, usagef("-result: %v (a plain string needs JSON quotes: -result '\"text\"')", err)
					}
					return nil, usagef("%v", err)
				}
				return func(ctx context.Context, e *env) error {
					id, err := e.in.PublishTest(ctx, msg)
					if err != nil {
						return err
					}
					if e.partitioned() {
						p, key := e.in.PartitionFor(msg.TaskID)
						return e.print(publishedView{ID: id, Stream: key, Partition: &p, Partitions: e.g.partitions}, func() error {
							_, err := fmt.Fprintf(e.stdout, "Published %s to %s (partition %d of %d).\n", id, key, p, e.g.partitions)
							return err
						})
					}
					return e.print(publishedView{ID: id, Stream: e.g.stream}, func() error {
						_, err := fmt.Fprintf(e.stdout, "Published %s to %s.\n", id, e.g.stream)
						return err
					})
				}, nil
			}
		},
	},
	{
		name:    "tail",
		usage:   "[-from ID]",
		summary: "print entries as they are added to the stream, until Ctrl-C",
		about: `Follows the stream (XREAD BLOCK, not a group read: consumers are not
disturbed, and every entry shows, whichever consumer handles it) and prints
one line per entry: its id, operation, task and outcome, or why it cannot be
decoded. -from "$" (the default) starts with entries added from now on,
-from 0 with the oldest, -from ID after that id. -timeout does not apply;
stop it with Ctrl-C. With -json it prints one JSON object per line. With
-partitions N it follows all N partitions and names each entry
PARTITION/ID; one partition's entries come in order, different partitions'
as they arrive.`,
		example: "completion tail\ncompletion tail -from 0 -json\ncompletion -partitions 6 tail",
		endless: true,
		setup: func(fs *flag.FlagSet) func([]string) (action, error) {
			from := fs.String("from", "$", "start after this entry `ID` (\"$\": now; \"0\": the beginning)")
			return func(args []string) (action, error) {
				if len(args) > 0 {
					return nil, usagef("tail takes no arguments, got %q", args)
				}
				return func(ctx context.Context, e *env) error {
					if err := e.checkRefs([]string{*from}); err != nil {
						return err
					}
					if !e.g.json {
						what := e.g.stream
						if e.partitioned() {
							what = fmt.Sprintf("the %d partitions of %s", e.g.partitions, e.g.stream)
						}
						fmt.Fprintf(e.stderr, "Following %s from %s; Ctrl-C to stop.\n", what, *from)
					}
					return e.in.Tail(ctx, *from, func(en inspect.Entry) error {
						if e.g.json {
							return writeJSONLine(e.stdout, entryView(en, e.partitioned()))
						}
						return writeEntry(e.stdout, en, e.partitioned())
					})
				}, nil
			}
		},
	},
	serveCommand, // serve.go
}

func commandNamed(name string) (*command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return nil, false
}

// streamID matches a stream entry id: "1700000000000-0", or "1700000000000"
// (sequence 0 as a start, all sequences as an end), optionally prefixed
// with a partition ("2/1700000000000-0", with -partitions; see env.checkRefs).
var streamID = regexp.MustCompile(`^([0-9]+/)?[0-9]+(-[0-9]+)?$`)

// checkIDs reports the first argument that is not a stream id; with ends,
// "-" and "+" (the oldest and the newest) are accepted too.
func checkIDs(ids []string, ends bool) error {
	for _, id := range ids {
		if ends && (id == "-" || id == "+") {
			continue
		}
		if !streamID.MatchString(id) {
			return usagef("%q is not a stream entry id (like 1700000000000-0, as \"completion dead\" lists them)", id)
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

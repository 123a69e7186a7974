package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

const helpIntro = `completion inspects and repairs a completion stream: the Redis stream that
carries "operation finished" messages to the API pods, its consumer groups,
and its dead-letter stream, where consumers put entries they gave up on
("{STREAM}:dead", or "STREAM:dead" when the key has a {hash tag} already).

Usage:
  completion [global flags] <command> [flags] [arguments]

Global flags (also accepted after the command):
  -addr ADDR       Redis address, host:port or redis://[user:password@]host:port/db
                   (default $REDIS_ADDR, or localhost:6379)
  -stream KEY      the completion stream (default chat:completions)
  -partition I/N   partition I (from 0) of the stream split into N (Config.Partitions)
  -partitions N    all N partitions of the stream at once (see "Partitioned streams")
  -group NAME      the consumer group, for pending (default chat_consumers)
  -json            print JSON instead of tables
  -timeout D       give up after D, e.g. 5s (default 10s; not for tail)

Commands:
`

const helpOutro = `Partitioned streams: a stream that consumers read with Config.Partitions N
(and producers write with WithPartitions(N)) is N streams, STREAM:{tag}, on
different Redis Cluster masters. With -partitions N every command covers all
of them: "info" shows the totals (pending counts, lags and consumers merged)
and a line per partition; "pending", "dead" and "tail" merge the partitions,
oldest first, and name entries PARTITION/ID (e.g. 2/1700000000000-0);
"redrive" and "purge" take those ids (a bare ID is looked for in every
partition, and refused if several have it), and "redrive" puts each dead
letter back into the partition it came from; "publish" picks the task's
partition, as producers do. -partition I/N looks at partition I alone.

A typical repair: "info" shows dead letters; "dead" shows why (say
task_not_found, because a task was registered late); fix the cause; then
"redrive -all" puts them back, and the consumers handle them as new entries.

Exit status: 0 success, 1 failure (Redis unreachable, a Redis error),
2 usage error. "completion help <command>" shows a command's flags.
`

// printHelp writes the full help text: every command with an example.
func printHelp(w io.Writer) {
	fmt.Fprint(w, helpIntro)
	for _, c := range commands {
		fmt.Fprintf(w, "\n  %s\n", strings.TrimSpace(c.name+" "+c.usage))
		fmt.Fprintf(w, "      %s\n", c.summary)
		for _, ex := range strings.Split(c.example, "\n") {
			fmt.Fprintf(w, "      e.g. %s\n", ex)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, helpOutro)
}

// printCommandHelp writes one command's help: usage, description, flags
// and examples.
func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: completion [global flags] %s\n\n", strings.TrimSpace(c.name+" "+c.usage))
	fmt.Fprintf(w, "%s\n", c.about)
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.setup(fs)
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	fmt.Fprintf(w, "\nExamples:\n")
	for _, ex := range strings.Split(c.example, "\n") {
		fmt.Fprintf(w, "  %s\n", ex)
	}
	fmt.Fprintf(w, "\nGlobal flags (-addr, -stream, -partition, -partitions, -group, -json, -timeout): see 'completion help'.\n")
}

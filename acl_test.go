package completion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/engine"
	"github.com/streamrelay/completion/internal/redistest"
)

// The least Redis ACL permissions a consumer and a publisher need. Every
// command a Consumer sends, directly or from one of its Lua scripts (Redis
// checks the commands a script runs against the calling user too), is
// listed; nothing else is.
//
//	XGROUP CREATE        create the group (MKSTREAM) at start and after the stream was deleted
//	XREADGROUP           read new entries, and the consumer's own pending list
//	XAUTOCLAIM           take over entries other consumers left pending
//	XPENDING             delivery counts; also in the lease and remove-self scripts
//	XCLAIM               take an entry back for its retry; also in the lease script
//	XACK                 acknowledge; also in the dead-letter script
//	XADD                 in the dead-letter script (and directly, in a cluster whose keys do not share a slot)
//	XRANGE               in the dead-letter script, which copies the entry; tells a trimmed entry due for a retry from one taken over
//	XINFO CONSUMERS      in the stale-consumer script
//	XINFO GROUPS         optional: at start, when Redis is out of memory and refuses XGROUP CREATE, whether the group exists
//	XGROUP DELCONSUMER   in the stale-consumer and remove-self scripts
//	EVALSHA, EVAL        the scripts (go-redis sends EVALSHA, then EVAL when the script is not cached)
//	CLIENT ID, UNBLOCK   optional: interrupt the blocked read at shutdown (without them, shutdown waits up to Config.Block)
//	EXISTS, SET          only with Config.DedupTTL, on the DedupPrefix keys
//	ZADD ZREMRANGEBYSCORE ZRANGE PEXPIRE TIME  the member set, in the heartbeat script
//	ZREM                 leave the member set at shutdown
//	GET SET DEL          only with Config.Partitions > 1: the owner keys, in the acquire, renew and release scripts
//
// Keys: the stream, the dead-letter stream (read and write: EVAL declares
// its keys read-write), the member set "<stream>:members:<group>", and with
// DedupTTL the DedupPrefix keys. With Partitions > 1, every key
// "<stream>:*": the partitions, their dead-letter streams, the owner keys,
// the member set (and the default DedupPrefix).
var (
	consumerACLCommands = []string{
		"xgroup|create", "xreadgroup", "xautoclaim", "xpending", "xclaim", "xack", "xadd", "xrange",
		"xinfo|consumers", "xinfo|groups", "xgroup|delconsumer", "evalsha", "eval", "client|id", "client|unblock",
		"zadd", "zremrangebyscore", "zrange", "pexpire", "time", "zrem",
	}
	consumerDedupACLCommands     = []string{"exists", "set"}
	consumerPartitionACLCommands = []string{"get", "set", "del"}
	publisherACLCommands         = []string{"xadd"}
)

// aclGlob escapes the characters Redis glob patterns treat specially, so
// that a key name can be used as an ACL key pattern.
func aclGlob(key string) string {
	var b strings.Builder
	for _, r := range key {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// consumerACLRules returns the ACL SETUSER rules (after "reset on
// >password") for a consumer with configuration cfg (defaults filled in).
func consumerACLRules(cfg Config) []string {
	rules := []string{"~" + aclGlob(cfg.Stream), "~" + aclGlob(cfg.DeadLetterStream), "~" + aclGlob(cfg.Stream+":members:") + "*"}
	cmds := consumerACLCommands
	if cfg.Partitions > 1 {
		rules = []string{"~" + aclGlob(cfg.Stream) + ":*"}
		cmds = append(slices.Clip(cmds), consumerPartitionACLCommands...)
	}
	if cfg.DedupTTL > 0 {
		rules = append(rules, "~"+aclGlob(cfg.DedupPrefix)+"*")
		cmds = append(slices.Clip(cmds), consumerDedupACLCommands...)
	}
	for _, c := range cmds {
		rules = append(rules, "+"+c)
	}
	return rules
}

// publisherACLRules returns the ACL SETUSER rules for a publisher to
// stream.
func publisherACLRules(stream string) []string {
	rules := []string{"~" + aclGlob(stream)}
	for _, c := range publisherACLCommands {
		rules = append(rules, "+"+c)
	}
	return rules
}

// aclLine renders an ACL SETUSER command line with a placeholder password.
func aclLine(user string, rules []string) string {
	return strings.Join(append([]string{"ACL", "SETUSER", user, "reset", "on", ">CHANGE-ME"}, rules...), " ")
}

// aclWithout returns rules minus those listed in drop; it fails the test when
// one of them is not there, so that a case cannot silently test nothing.
func aclWithout(t testing.TB, rules []string, drop ...string) []string {
	t.Helper()
	out := slices.Clone(rules)
	for _, d := range drop {
		i := slices.Index(out, d)
		require.GreaterOrEqual(t, i, 0, "rule %q is not in %v", d, rules)
		out = slices.Delete(out, i, i+1)
	}
	return out
}

// aclUser creates (or replaces) user with rules on the server admin talks
// to and returns a client logged in as that user. The client otherwise has
// go-redis's defaults, as an application's would.
func aclUser(t testing.TB, admin *redis.Client, user string, rules []string) *redis.Client {
	t.Helper()
	return aclUserClients(t, admin, user, rules)()
}

// aclUserClients is aclUser returning a function that makes a new client
// (a new pod) for the user each time it is called.
func aclUserClients(t testing.TB, admin *redis.Client, user string, rules []string) func() *redis.Client {
	t.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	pass := hex.EncodeToString(b[:])
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + pass}
	for _, r := range rules {
		args = append(args, r)
	}
	require.NoError(t, admin.Do(context.Background(), args...).Err(), "ACL SETUSER %s %v", user, rules)
	addr := admin.Options().Addr
	return func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: pass})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
}

// aclDenials returns the ACL LOG entries of the given users as
// "user: reason object" strings.
func aclDenials(t testing.TB, admin *redis.Client, users ...string) []string {
	t.Helper()
	entries, err := admin.ACLLog(context.Background(), 100).Result()
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if slices.Contains(users, e.Username) {
			out = append(out, fmt.Sprintf("%s: %s %s (context %s, count %d)", e.Username, e.Reason, e.Object, e.Context, e.Count))
		}
	}
	return out
}

// aclCommandCalls returns INFO commandstats calls per command (subcommands as
// "xgroup|create"), commands run by scripts included.
func aclCommandCalls(t testing.TB, admin *redis.Client) map[string]int64 {
	t.Helper()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	calls := make(map[string]int64)
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				calls[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return calls
}

// TestACLLines prints the ACL lines for the default stream names, for the
// README.
func TestACLLines(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	require.NoError(t, err)
	dedup, err := Config{DedupTTL: time.Hour}.withDefaults()
	require.NoError(t, err)
	extra := aclWithout(t, consumerACLRules(dedup), consumerACLRules(cfg)...)
	t.Logf("consumer:\n%s", aclLine("completion-consumer", consumerACLRules(cfg)))
	t.Logf("consumer with Config.DedupTTL, add: %s", strings.Join(extra, " "))
	t.Logf("publisher:\n%s", aclLine("completion-publisher", publisherACLRules(DefaultStream)))
	assert.Equal(t, []string{"~chat:completions:done:*", "+exists", "+set"}, extra)
	parted, err := Config{Partitions: 8}.withDefaults()
	require.NoError(t, err)
	t.Logf("partitioned consumer (Config.Partitions > 1):\n%s", aclLine("completion-consumer", consumerACLRules(parted)))
	assert.Equal(t, `~a\*b\?c\[d\]e\\f`, "~"+aclGlob(`a*b?c[d]e\f`))
}

// TestACLConsumerAndPublisherWorkWithMinimalPermissions runs two consumers
// and a publisher, each under its own ACL user holding exactly the
// permissions above, through every path that talks to Redis: create the
// group, read, handle and ack, retry (XCLAIM), dead-letter (script),
// reclaim a crashed consumer's entry (XAUTOCLAIM, XPENDING), keep a slow
// handler's entry from being reclaimed (lease script), remove departed
// consumers (script), duplicate suppression (EXISTS, SET), interrupt the
// blocked read at shutdown (CLIENT ID, CLIENT UNBLOCK) and remove itself
// from the group (script). Redis must have refused nothing.
func TestACLConsumerAndPublisherWorkWithMinimalPermissions(t *testing.T) {
	for _, dedup := range []bool{false, true} {
		t.Run(fmt.Sprintf("dedup=%v", dedup), func(t *testing.T) {
			testACLMinimal(t, dedup)
		})
	}
}

func testACLMinimal(t *testing.T, dedup bool) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)

	cfg := testConfig(DefaultStream) // the default key names, as in the printed lines
	cfg.Block = 30 * time.Second     // shutdown must interrupt it (CLIENT UNBLOCK)
	cfg.StaleConsumerAge = time.Second
	// Leases renew every ClaimMinIdle/3; leave room for a loaded machine.
	cfg.ClaimMinIdle = time.Second
	if dedup {
		cfg.DedupTTL = time.Hour
	}
	full, err := cfg.withDefaults()
	require.NoError(t, err)
	crules, prules := consumerACLRules(full), publisherACLRules(full.Stream)
	t.Logf("%s", aclLine("consumer", crules))
	t.Logf("%s", aclLine("publisher", prules))
	consumerClient := aclUserClients(t, admin, "consumer", crules)
	crdb1, crdb2 := consumerClient(), consumerClient() // two pods
	prdb := aclUser(t, admin, "publisher", prules)

	// The publisher may append and nothing else.
	pub := func(m Message) string {
		t.Helper()
		id, err := Publish(ctx, prdb, full.Stream, m)
		require.NoError(t, err)
		return id
	}
	err = prdb.XRange(ctx, full.Stream, "-", "+").Err()
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "NOPERM"), "publisher can read the stream: %v", err)
	require.NoError(t, admin.ACLLogReset(ctx).Err()) // that refusal was the point

	// A consumer that crashed holding op-1, and one that left the group
	// holding nothing.
	pub(Message{OperationID: "op-1", TaskID: "t-1", Success: true})
	require.NoError(t, admin.XGroupCreateMkStream(ctx, full.Stream, full.Group, "0").Err())
	require.NoError(t, admin.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: full.Group, Consumer: "crashed", Streams: []string{full.Stream, ">"}, Count: 1, Block: -1,
	}).Err())
	require.NoError(t, admin.XGroupCreateConsumer(ctx, full.Stream, full.Group, "departed").Err())

	var op2Failed, op3Calls aclCounter
	h := newRecorder()
	h.fn = func(c *Completion) error {
		switch c.Message.OperationID {
		case "op-2":
			if op2Failed.inc() == 1 {
				return errors.New("transient failure")
			}
		case "op-3":
			op3Calls.inc()
			_ = hold(context.Background(), 5*full.ClaimMinIdle/2) // the leaser must keep the entry
		}
		return nil
	}
	reg := registryWith(3)
	c1 := newTestConsumer(t, crdb1, reg, h, cfg)
	cfg2 := cfg
	cfg2.Consumer = "c2"
	c2 := newTestConsumer(t, crdb2, reg, h, cfg2)
	stop1, stop2 := startConsumer(t, c1), startConsumer(t, c2)

	pub(Message{OperationID: "op-2", TaskID: "t-2", Success: true})
	pub(Message{OperationID: "op-3", TaskID: "t-3", Success: false, Error: "boom"})
	pub(Message{OperationID: "op-unknown", TaskID: "t-unknown", Success: true})
	require.NoError(t, prdb.XAdd(ctx, &redis.XAddArgs{Stream: full.Stream, Values: []any{DataField, "not json"}}).Err())

	handled := func(op string) int {
		n := 0
		for _, c := range h.all() {
			if c.Message.OperationID == op {
				n++
			}
		}
		return n
	}
	eventually(t, func() bool { return handled("op-1") >= 1 }, "the crashed consumer's entry was not reclaimed")
	eventually(t, func() bool { return handled("op-2") >= 2 }, "op-2 was not retried")
	dead := func() []redis.XMessage {
		msgs, err := admin.XRange(ctx, full.DeadLetterStream, "-", "+").Result()
		require.NoError(t, err)
		return msgs
	}
	eventually(t, func() bool { return len(dead()) == 2 }, "dead letters missing")
	var reasons []string
	for _, m := range dead() {
		reasons = append(reasons, fmt.Sprint(m.Values[DeadLetterReasonField]))
	}
	assert.ElementsMatch(t, []string{ReasonMalformed, ReasonTaskNotFound}, reasons)
	eventually(t, func() bool {
		n, err := admin.XPending(ctx, full.Stream, full.Group).Result()
		return err == nil && n.Count == 0
	}, "entries still pending")
	assert.Equal(t, int64(1), op3Calls.load(), "the slow handler's entry was taken over: the lease script did not renew it")
	eventually(t, func() bool {
		cs, err := admin.XInfoConsumers(ctx, full.Stream, full.Group).Result()
		if err != nil {
			return false
		}
		for _, c := range cs {
			if c.Name == "crashed" || c.Name == "departed" {
				return false
			}
		}
		return true
	}, "departed consumers were not removed")
	if dedup {
		n, err := admin.Exists(ctx, full.DedupPrefix+"op-1", full.DedupPrefix+"op-2", full.DedupPrefix+"op-3").Result()
		require.NoError(t, err)
		assert.Equal(t, int64(3), n, "duplicate-suppression keys not written")
	}

	// Shutdown interrupts the 30 s blocked reads at once.
	eventually(t, func() bool { return aclBlockedReads(t, admin) >= 2 }, "no blocked XREADGROUP")
	for i, stop := range []func() error{stop1, stop2} {
		start := time.Now()
		require.NoError(t, stop(), "consumer %d", i+1)
		assert.Less(t, time.Since(start), 5*time.Second, "shutdown waited for the blocked read (CLIENT UNBLOCK)")
	}
	cs, err := admin.XInfoConsumers(ctx, full.Stream, full.Group).Result()
	require.NoError(t, err)
	assert.Empty(t, cs, "the consumers did not remove themselves from the group at shutdown")

	assert.Empty(t, aclDenials(t, admin, "consumer", "publisher"), "Redis refused commands (ACL LOG)")
	for _, c := range []*Consumer{c1, c2} {
		assert.Zero(t, c.Stats().RedisErrors, "redis errors: last %q", c.Stats().LastError)
	}
	// Every permission granted was used: none is superfluous for this run.
	calls := aclCommandCalls(t, admin)
	used := []string{"xautoclaim", "xpending", "xclaim", "xack", "evalsha", "xinfo|consumers", "xgroup|delconsumer", "client|id", "client|unblock"}
	if dedup {
		used = append(used, "exists", "set")
	}
	for _, cmd := range used {
		assert.Positive(t, calls[cmd], "%s was never called", cmd)
	}
	assert.Positive(t, calls["eval"]+calls["evalsha"], "no script ran")
}

// aclCounter is a mutex-guarded counter.
type aclCounter struct {
	mu sync.Mutex
	n  int64
}

func (c *aclCounter) inc() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

func (c *aclCounter) load() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestACLMissingPermissionEndsRun removes one permission at a time and
// checks that Run stops promptly with an error wrapping ErrRedisFatal that
// says what was refused, instead of retrying a refusal forever.
func TestACLMissingPermissionEndsRun(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)
	ctx := context.Background()

	type env struct {
		cfg   *Config
		admin *redis.Client
		h     *recorder
	}
	good := func(e env) {
		_, err := Publish(ctx, e.admin, e.cfg.Stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
		require.NoError(t, err)
	}
	malformed := func(e env) {
		require.NoError(t, e.admin.XAdd(ctx, &redis.XAddArgs{Stream: e.cfg.Stream, Values: []any{DataField, "not json"}}).Err())
	}
	tests := []struct {
		name     string
		drop     func(cfg Config) []string // rules to leave out
		dedup    bool
		setup    func(e env)
		want     []string // in the error text, besides ErrRedisFatal's
		inScript bool     // refused inside a Lua script
		atCreate bool     // refused at XGROUP CREATE, before anything runs
	}{
		{name: "no key access to the stream", drop: aclKeyRule(func(c Config) string { return c.Stream }),
			want: []string{"XGROUP CREATE", "NOPERM", "keys"}, atCreate: true},
		{name: "no XGROUP CREATE", drop: aclCmdRule("xgroup|create"), want: []string{"NOPERM", "'xgroup|create'"}, atCreate: true},
		{name: "no XREADGROUP", drop: aclCmdRule("xreadgroup"), want: []string{"NOPERM", "'xreadgroup'"}},
		{name: "no XAUTOCLAIM", drop: aclCmdRule("xautoclaim"), want: []string{"NOPERM", "'xautoclaim'"}},
		{name: "no EVALSHA", drop: aclCmdRule("evalsha"), want: []string{"NOPERM", "'evalsha'"}},
		{name: "no EVAL", drop: aclCmdRule("eval"), want: []string{"NOPERM", "'eval'"},
			setup: func(e env) { require.NoError(t, e.admin.ScriptFlush(ctx).Err()) }},
		{name: "no XACK", drop: aclCmdRule("xack"), setup: good, want: []string{"NOPERM", "'xack'"}},
		{name: "no XCLAIM", drop: aclCmdRule("xclaim"), want: []string{"NOPERM", "'xclaim'"},
			setup: func(e env) {
				good(e)
				e.h.fn = func(*Completion) error { return errors.New("fail once, then retry with XCLAIM") }
			}},
		{name: "no XPENDING", drop: aclCmdRule("xpending"), want: []string{"NOPERM", "'xpending'"},
			setup: func(e env) {
				// An entry already pending for this consumer: its delivery
				// count comes from XPENDING.
				good(e)
				require.NoError(t, e.admin.XGroupCreateMkStream(ctx, e.cfg.Stream, e.cfg.Group, "0").Err())
				require.NoError(t, e.admin.XReadGroup(ctx, &redis.XReadGroupArgs{
					Group: e.cfg.Group, Consumer: e.cfg.Consumer, Streams: []string{e.cfg.Stream, ">"}, Block: -1,
				}).Err())
			}},
		{name: "no key access to the dead-letter stream", drop: aclKeyRule(func(c Config) string { return c.DeadLetterStream }),
			setup: malformed, want: []string{"dead-letter", "NOPERM", "keys"}},
		{name: "no EXISTS with DedupTTL", dedup: true, drop: aclCmdRule("exists"), setup: good, want: []string{"NOPERM", "'exists'"}},
		{name: "no SET with DedupTTL", dedup: true, drop: aclCmdRule("set"), setup: good, want: []string{"NOPERM", "'set'"}},
		{name: "no key access to the dedup keys", dedup: true, setup: good, want: []string{"dedup", "NOPERM", "keys"},
			drop: func(c Config) []string { return []string{"~" + aclGlob(c.DedupPrefix) + "*"} }},
		// Refused inside a script: Redis 7.0 answers "ERR The user executing
		// the script can't run this command or subcommand", 7.2 and later
		// "ERR ACL failure in script: ...".
		{name: "no XADD in the dead-letter script", drop: aclCmdRule("xadd"), setup: malformed,
			want: []string{"dead-letter", "script"}, inScript: true},
		{name: "no ZADD in the heartbeat script", drop: aclCmdRule("zadd"),
			want: []string{"heartbeat", "script"}, inScript: true},
		{name: "no XINFO CONSUMERS in the stale-consumer script", drop: aclCmdRule("xinfo|consumers"),
			want: []string{"stale", "script"}, inScript: true},
		{name: "no XGROUP DELCONSUMER in the stale-consumer script", drop: aclCmdRule("xgroup|delconsumer"),
			want: []string{"stale", "script"}, inScript: true,
			setup: func(e env) {
				e.cfg.StaleConsumerAge = time.Millisecond
				require.NoError(t, e.admin.XGroupCreateMkStream(ctx, e.cfg.Stream, e.cfg.Group, "0").Err())
				require.NoError(t, e.admin.XGroupCreateConsumer(ctx, e.cfg.Stream, e.cfg.Group, "departed").Err())
				idleAtLeast(t, e.admin, e.cfg.Stream, e.cfg.Group, 2*time.Millisecond, "departed")
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(fmt.Sprintf("acl:{case%d}", i))
			if tt.dedup {
				cfg.DedupTTL = time.Hour
			}
			full, err := cfg.withDefaults()
			require.NoError(t, err)
			user := fmt.Sprintf("consumer%d", i)
			rules := aclWithout(t, consumerACLRules(full), tt.drop(full)...)
			t.Logf("%s", aclLine(user, rules))
			rdb := aclUser(t, admin, user, rules)
			if tt.inScript {
				requireScriptRefusalIsFatal(t, rdb)
			}
			if tt.atCreate {
				err := rdb.XGroupCreateMkStream(ctx, cfg.Stream, cfg.Group, "0").Err()
				require.Error(t, err)
				requireFatalGroupCreateEndsRun(t, rdb, err)
			}
			h := newRecorder()
			if tt.setup != nil {
				tt.setup(env{cfg: &cfg, admin: admin, h: h})
			}
			c := newTestConsumer(t, rdb, registryWith(1), h, cfg)

			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- c.Run(runCtx) }()
			var runErr error
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				cancel()
				<-done
				t.Fatalf("Run still running 20s after start with %q missing: it retries a refusal it cannot fix (state %v, last error %q)",
					tt.drop(full), c.State(), c.Stats().LastError)
			}
			t.Logf("Run returned after %v: %v", time.Since(start).Round(time.Millisecond), runErr)
			require.ErrorIs(t, runErr, ErrRedisFatal)
			for _, w := range tt.want {
				assert.Contains(t, runErr.Error(), w)
			}
			assert.Contains(t, runErr.Error(), cfg.Stream, "the error does not name the stream")
			assert.Less(t, time.Since(start), 10*time.Second, "Run did not stop promptly")
			assert.Equal(t, StateIdle, c.State())
		})
	}
}

// aclCmdRule leaves out "+cmd".
func aclCmdRule(cmd string) func(Config) []string {
	return func(Config) []string { return []string{"+" + cmd} }
}

// aclKeyRule leaves out the key pattern of the key key returns.
func aclKeyRule(key func(Config) string) func(Config) []string {
	return func(c Config) []string { return []string{"~" + aclGlob(key(c))} }
}

// requireScriptRefusalIsFatal checks that the library treats Redis's answer
// to a command refused inside a script as fatal. Redis answers it with an
// "ERR" error, not "NOPERM" (7.0: "ERR The user executing the script can't
// run this command or subcommand" / "... can't access at least one of the
// keys mentioned in the command arguments"; 7.2+: "ERR ACL failure in
// script: ..."); were it not fatal, Run would retry it forever.
func requireScriptRefusalIsFatal(t *testing.T, rdb *redis.Client) {
	t.Helper()
	// DBSIZE is granted to no consumer: a script calling it is refused.
	err := rdb.Eval(context.Background(), "return redis.call('dbsize')", nil).Err()
	require.Error(t, err, "a script could run a command the user was not granted")
	require.True(t, engine.IsFatal(err), "a refusal inside a script must be fatal: %v", err)
}

// aclRefusingGroupClient is a RedisClient whose XGROUP CREATE fails with err.
type aclRefusingGroupClient struct {
	*redis.Client
	err error
}

func (c aclRefusingGroupClient) XGroupCreateMkStream(ctx context.Context, _, _, _ string) *redis.StatusCmd {
	cmd := redis.NewStatusCmd(ctx)
	cmd.SetErr(c.err)
	return cmd
}

// requireFatalGroupCreateEndsRun checks that Run returns at once, with the
// error, after a fatal refusal of XGROUP CREATE (it used to wait for its
// context).
func requireFatalGroupCreateEndsRun(t *testing.T, rdb *redis.Client, refusal error) {
	t.Helper()
	require.True(t, engine.IsFatal(refusal), "not fatal: %v", refusal)
	c := newTestConsumer(t, aclRefusingGroupClient{rdb, refusal}, registryWith(1), newRecorder(), testConfig("acl:probe"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrRedisFatal)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("Run did not return after a fatal XGROUP CREATE refusal; after cancel it returned %v", <-done)
	}
}

// TestACLWithoutClientCommandsDegradesGracefully: CLIENT ID and CLIENT
// UNBLOCK only make shutdown faster. Without them the consumer works, and
// shutdown waits for the blocked read to time out (at most Config.Block).
func TestACLWithoutClientCommandsDegradesGracefully(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)
	ctx := context.Background()
	for i, drop := range [][]string{{"+client|id", "+client|unblock"}, {"+client|unblock"}} {
		t.Run("without "+strings.Join(drop, " "), func(t *testing.T) {
			cfg := testConfig(fmt.Sprintf("acl:{client%d}", i))
			cfg.Block = 2 * time.Second
			full, err := cfg.withDefaults()
			require.NoError(t, err)
			user := fmt.Sprintf("noclient%d", i)
			rules := aclWithout(t, consumerACLRules(full), drop...)
			t.Logf("%s", aclLine(user, rules))
			rdb := aclUser(t, admin, user, rules)
			h := newRecorder()
			c := newTestConsumer(t, rdb, registryWith(1), h, cfg)
			stop := startConsumer(t, c)
			_, err = Publish(ctx, admin, cfg.Stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true})
			require.NoError(t, err)
			assert.Equal(t, "op-1", h.next(t).Message.OperationID)
			eventually(t, func() bool {
				n, err := admin.XPending(ctx, cfg.Stream, cfg.Group).Result()
				return err == nil && n.Count == 0
			}, "not acknowledged")
			eventually(t, func() bool { return aclBlockedReads(t, admin) >= 1 }, "no blocked XREADGROUP")
			start := time.Now()
			require.NoError(t, stop(), "Run must not fail for lack of CLIENT permissions")
			took := time.Since(start)
			t.Logf("shutdown took %v (Block %v)", took.Round(time.Millisecond), cfg.Block)
			assert.Less(t, took, cfg.Block+3*time.Second)
			assert.Zero(t, c.Stats().RedisErrors, "last error %q", c.Stats().LastError)
			t.Logf("refused by Redis (ACL LOG): %v", aclDenials(t, admin, user))
		})
	}
}

// aclBlockedReads counts the clients blocked in XREADGROUP.
func aclBlockedReads(t testing.TB, admin *redis.Client) int {
	t.Helper()
	list, err := admin.ClientList(context.Background()).Result()
	require.NoError(t, err)
	n := 0
	for _, line := range strings.Split(list, "\n") {
		fields := strings.Fields(line)
		if slices.Contains(fields, "cmd=xreadgroup") && slices.ContainsFunc(fields, func(f string) bool {
			v, ok := strings.CutPrefix(f, "flags=")
			return ok && strings.Contains(v, "b")
		}) {
			n++
		}
	}
	return n
}

// TestACLPublisher: with XADD on the stream a publisher works (also with
// write-only key access, %W~, on Redis 7); without it Publish returns
// Redis's refusal at once, naming the command or the key problem and the
// stream, not ErrMalformed.
func TestACLPublisher(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)
	ctx := context.Background()
	const stream = "acl:{pub}"
	msg := Message{OperationID: "op-1", TaskID: "t-1", Success: true}
	tests := []struct {
		name  string
		rules []string
		want  []string // empty: success
	}{
		{"minimal", publisherACLRules(stream), nil},
		{"write-only key access", []string{"%W~" + aclGlob(stream), "+xadd"}, nil},
		{"no XADD", aclWithout(t, publisherACLRules(stream), "+xadd"), []string{"NOPERM", "'xadd'"}},
		{"no key access", aclWithout(t, publisherACLRules(stream), "~"+aclGlob(stream)), []string{"NOPERM", "keys"}},
		{"other stream only", []string{"~other", "+xadd"}, []string{"NOPERM", "keys"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Logf("%s", aclLine("publisher", tt.rules))
			rdb := aclUser(t, admin, fmt.Sprintf("publisher%d", i), tt.rules)
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			id, err := Publish(pctx, rdb, stream, msg)
			if len(tt.want) == 0 {
				require.NoError(t, err)
				got, err := admin.XRange(ctx, stream, id, id).Result()
				require.NoError(t, err)
				require.Len(t, got, 1)
				var back Message
				require.NoError(t, decodeMessage([]byte(fmt.Sprint(got[0].Values[DataField])), &back))
				assert.Equal(t, msg, back)
				return
			}
			require.Error(t, err)
			t.Logf("Publish: %v", err)
			assert.NotErrorIs(t, err, ErrMalformed)
			assert.NotErrorIs(t, err, context.DeadlineExceeded)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Contains(t, err.Error(), strconv.Quote(stream))
		})
	}
}

// TestACLPartitionedConsumer runs two consumers of a partitioned stream
// under a user with exactly the permissions listed for Partitions > 1: they
// share the partitions out, handle everything, hand the partitions back at
// shutdown, and Redis refuses nothing.
func TestACLPartitionedConsumer(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, redistest.Options{})
	admin := srv.Client(t)

	cfg := testConfig(DefaultStream)
	cfg.Partitions = 4
	cfg.ClaimMinIdle = time.Second
	full, err := cfg.withDefaults()
	require.NoError(t, err)
	rules := consumerACLRules(full)
	t.Logf("%s", aclLine("consumer", rules))
	clients := aclUserClients(t, admin, "consumer", rules)
	prdb := aclUser(t, admin, "publisher", []string{"~" + aclGlob(full.Stream) + ":*", "+xadd"})

	h := newRecorder()
	var cs []*Consumer
	var stops []func() error
	for _, name := range []string{"c1", "c2"} {
		cfg := full
		cfg.Consumer = name
		c := newTestConsumer(t, clients(), anyTask, h, cfg)
		cs = append(cs, c)
		stops = append(stops, startConsumer(t, c))
	}
	eventually(t, func() bool { return cs[0].Stats().Partitions == 2 && cs[1].Stats().Partitions == 2 },
		"two consumers should own two partitions each")
	const n = 40
	for i := 0; i < n; i++ {
		_, err := Publish(ctx, prdb, full.Stream, Message{OperationID: fmt.Sprintf("op-%d", i), TaskID: fmt.Sprintf("t-%d", i), Success: true},
			WithPartitions(full.Partitions))
		require.NoError(t, err)
	}
	eventually(t, func() bool { return len(h.all()) == n }, "not all handled")
	for _, stop := range stops {
		require.NoError(t, stop())
	}
	keys, err := admin.Keys(ctx, full.Stream+":*:owner:*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "owner keys should be released at shutdown")
	assert.Empty(t, aclDenials(t, admin, "consumer", "publisher"), "Redis refused a command")
	for _, c := range cs {
		assert.Zero(t, c.Stats().RedisErrors, "%s saw Redis errors: %s", c.Config().Consumer, c.Stats().LastError)
	}
}

package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

const (
	// clusterSlots is the number of hash slots of a Redis Cluster.
	clusterSlots = 16384
	// clusterNodeTimeout is cluster-node-timeout in milliseconds: how long
	// a node may be unreachable before the others flag it as failing.
	clusterNodeTimeout = 2000
	// clusterFormTimeout bounds how long StartCluster waits for a new
	// cluster to settle.
	clusterFormTimeout = 30 * time.Second
	// clusterOKTimeout bounds how long WaitOK waits, e.g. after Restart: a
	// restarted master waits 2 s before it serves again, and the others
	// clear their FAIL flag on it up to 2 node timeouts after setting it.
	clusterOKTimeout = 30 * time.Second
)

// Cluster is a Redis Cluster of masters without replicas, owned by one
// test: one redis-server per master, each a [Server] with its own port,
// cluster bus port and directory, started with
//
//	--cluster-enabled yes --cluster-config-file nodes.conf
//	--cluster-node-timeout 2000 --cluster-require-full-coverage no
//	--cluster-announce-ip 127.0.0.1 --appendonly yes --appendfsync always
//
// Node i serves the i-th of masters equal ranges of the 16384 hash slots.
// As there are no replicas there is no failover: the slots of a killed
// master are unavailable until it is restarted (with its data, from its
// append-only file, and its cluster identity, from nodes.conf), while the
// other masters go on serving theirs.
//
// The servers are stopped and reaped in t.Cleanup, like those of [Start].
type Cluster struct {
	nodes []*Server
	bus   []int    // cluster bus port of each node
	first []int    // first slot of each node; node i serves first[i] .. first[i+1]-1
	addrs []string // client address of each node

	mu    sync.Mutex
	moved map[int]int // slot -> node, for slots moved by MigrateSlot
}

// StartCluster spawns a cluster of masters redis-server processes on free
// loopback ports and forms it without redis-cli: it assigns each node its
// slot range (CLUSTER ADDSLOTS) and a distinct config epoch, introduces the
// nodes to the first one (CLUSTER MEET), and waits until every node knows
// every other, reports cluster_state:ok and sees all slots served.
//
// Without a redis-server binary it skips the test, or fails it when the CI
// environment variable is set, like [Start].
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 1 || masters > clusterSlots {
		t.Fatalf("redistest: StartCluster(%d): the number of masters must be between 1 and %d", masters, clusterSlots)
	}
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redistest: %v; CI must provide it: run `apt-get update && apt-get install -y redis-server` (see .ci/run)", err)
		}
		t.Skipf("redistest: %v; install it (e.g. `apt-get install redis-server`) to run this test", err)
	}
	// Redis 7 lets the bus port be chosen (cluster-port); before, it is
	// always the client port + 10000.
	legacyBus := serverMajor(bin) < 7

	c := &Cluster{}
	for i := range masters {
		s := newServer(bin, t.TempDir(), Options{
			AppendOnly: true,
			Args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", strconv.Itoa(clusterNodeTimeout),
				// Without replicas a killed master's slots cannot be
				// served; the rest of the cluster goes on serving its own.
				"--cluster-require-full-coverage", "no",
				// A lone node never learns its own address otherwise.
				"--cluster-announce-ip", "127.0.0.1",
			},
		})
		s.t = t
		t.Cleanup(s.cleanup)
		bus, err := s.startClusterNode(legacyBus)
		if err != nil {
			t.Fatalf("redistest: cluster node %d: %v", i, err)
		}
		c.nodes = append(c.nodes, s)
		c.bus = append(c.bus, bus)
		c.addrs = append(c.addrs, s.Addr())
		c.first = append(c.first, i*clusterSlots/masters)
	}
	if err := c.form(legacyBus); err != nil {
		t.Fatalf("redistest: form the cluster: %v%s", err, c.logTails(20))
	}
	return c
}

// Addrs returns the client addresses of the nodes, "127.0.0.1:port", node
// 0 first. They stay the same across Restart.
func (c *Cluster) Addrs() []string { return slices.Clone(c.addrs) }

// Len returns the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i, e.g. to Kill, Restart, Pause or Resume it. After a
// Restart, call WaitOK before relying on the cluster again.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// Client returns a go-redis cluster client seeded with every node's
// address, closed in t.Cleanup. It uses the library's defaults, except that
// maintenance notifications are disabled.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                    c.Addrs(),
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// MasterFor returns the index of the node that serves key's hash slot (as
// StartCluster assigned it, or MigrateSlot moved it).
func (c *Cluster) MasterFor(key string) int {
	return c.masterForSlot(KeySlot(key))
}

func (c *Cluster) masterForSlot(slot int) int {
	c.mu.Lock()
	n, ok := c.moved[slot]
	c.mu.Unlock()
	if ok {
		return n
	}
	i, found := slices.BinarySearch(c.first, slot)
	if !found {
		i--
	}
	return i
}

// MigrateSlot moves slot, with its keys, to node to, the way redis-cli
// --cluster reshard does: the target imports it (CLUSTER SETSLOT
// IMPORTING), the owner migrates it (MIGRATING) and MIGRATEs its keys
// over, then every node is told the new owner (SETSLOT NODE). Clients
// get -MOVED for the slot from the old owner from then on, and a client
// blocked there on a key of the slot is unblocked with -MOVED. It then
// waits as WaitOK does. It fails the test on error, so it must be called
// from the test's goroutine.
func (c *Cluster) MigrateSlot(t testing.TB, slot, to int) {
	t.Helper()
	from := c.masterForSlot(slot)
	if from == to {
		return
	}
	if err := c.migrateSlot(slot, from, to); err != nil {
		t.Fatalf("redistest: move slot %d from node %d to node %d: %v%s", slot, from, to, err, c.logTails(20))
	}
	c.mu.Lock()
	if c.moved == nil {
		c.moved = make(map[int]int)
	}
	c.moved[slot] = to
	c.mu.Unlock()
	c.WaitOK(t)
}

func (c *Cluster) migrateSlot(slot, from, to int) error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterOKTimeout)
	defer cancel()
	ids := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		if err := withNodeClient(s.Addr(), func(rc *redis.Client) error {
			id, err := rc.Do(ctx, "CLUSTER", "MYID").Text()
			ids[i] = id
			return err
		}); err != nil {
			return fmt.Errorf("node %d: CLUSTER MYID: %w", i, err)
		}
	}
	do := func(node int, args ...any) error {
		return withNodeClient(c.nodes[node].Addr(), func(rc *redis.Client) error {
			if err := rc.Do(ctx, args...).Err(); err != nil {
				return fmt.Errorf("node %d: %v: %w", node, args, err)
			}
			return nil
		})
	}
	if err := do(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from]); err != nil {
		return err
	}
	if err := do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to]); err != nil {
		return err
	}
	err := withNodeClient(c.nodes[from].Addr(), func(rc *redis.Client) error {
		for {
			keys, err := rc.ClusterGetKeysInSlot(ctx, slot, 100).Result()
			if err != nil {
				return fmt.Errorf("CLUSTER GETKEYSINSLOT: %w", err)
			}
			if len(keys) == 0 {
				return nil
			}
			args := []any{"MIGRATE", "127.0.0.1", c.nodes[to].port, "", 0, 5000, "KEYS"}
			for _, k := range keys {
				args = append(args, k)
			}
			if err := rc.Do(ctx, args...).Err(); err != nil {
				return fmt.Errorf("MIGRATE: %w", err)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("node %d: %w", from, err)
	}
	// The new owner first, then the old one, then the rest.
	order := []int{to, from}
	for i := range c.nodes {
		if i != to && i != from {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if err := do(i, "CLUSTER", "SETSLOT", slot, "NODE", ids[to]); err != nil {
			return err
		}
	}
	return nil
}

// WaitOK waits (up to 30 s) until every node is running, knows every
// other node as connected and not failing, reports cluster_state:ok, and
// sees all 16384 slots assigned and served, each by the node StartCluster
// (or MigrateSlot) gave it. It fails the test otherwise, so it must be called from the
// test's goroutine.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	if err := c.waitOK(clusterOKTimeout); err != nil {
		t.Fatalf("redistest: cluster not ok within %v: %v%s", clusterOKTimeout, err, c.logTails(20))
	}
}

// KeySlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its {hash tag} when it has a non-empty one, mod 16384.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % clusterSlots)
}

// form assigns the slots and config epochs, joins the nodes and waits for
// the cluster to settle.
func (c *Cluster) form(legacyBus bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterFormTimeout)
	defer cancel()
	for i, s := range c.nodes {
		last := clusterSlots
		if i+1 < len(c.first) {
			last = c.first[i+1]
		}
		if err := s.clusterSetup(ctx, c.first[i], last, i+1); err != nil {
			return fmt.Errorf("node %d (%s): %w", i, s.Addr(), err)
		}
	}
	meet := []any{"CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.nodes[0].port)}
	if !legacyBus {
		meet = append(meet, strconv.Itoa(c.bus[0]))
	}
	for i, s := range c.nodes[1:] {
		if err := withNodeClient(s.Addr(), func(rc *redis.Client) error {
			return rc.Do(ctx, meet...).Err()
		}); err != nil {
			return fmt.Errorf("node %d (%s): CLUSTER MEET: %w", i+1, s.Addr(), err)
		}
	}
	return c.waitOK(time.Until(deadlineOf(ctx)))
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// clusterSetup gives the node the slots [first, end) and config epoch
// epoch.
func (s *Server) clusterSetup(ctx context.Context, first, end, epoch int) error {
	return withNodeClient(s.Addr(), func(rc *redis.Client) error {
		if end > first {
			// ADDSLOTS with every slot works on every version
			// (ADDSLOTSRANGE needs Redis 7).
			args := make([]any, 0, 2+end-first)
			args = append(args, "CLUSTER", "ADDSLOTS")
			for slot := first; slot < end; slot++ {
				args = append(args, slot)
			}
			if err := rc.Do(ctx, args...).Err(); err != nil {
				return fmt.Errorf("CLUSTER ADDSLOTS %d..%d: %w", first, end-1, err)
			}
		}
		// Distinct epochs from the start, as redis-cli --cluster create
		// does, so the nodes need not resolve epoch collisions first.
		if err := rc.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", epoch).Err(); err != nil {
			return fmt.Errorf("CLUSTER SET-CONFIG-EPOCH %d: %w", epoch, err)
		}
		return nil
	})
}

// withNodeClient runs f with a plain client to one node, closed afterwards.
func withNodeClient(addr string, f func(*redis.Client) error) error {
	rc := redis.NewClient(&redis.Options{
		Addr:                     addr,
		MaxRetries:               -1,
		DialTimeout:              time.Second,
		ReadTimeout:              2 * time.Second,
		WriteTimeout:             2 * time.Second,
		PoolSize:                 1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer rc.Close()
	return f(rc)
}

// waitOK polls every node until the cluster is settled (see WaitOK) or d
// has passed, and returns what was last wrong.
func (c *Cluster) waitOK(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := c.checkOK()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkOK reports what is not (yet) right with the cluster, as every node
// sees it.
func (c *Cluster) checkOK() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	want := make(map[string]int, len(c.nodes)) // "ip:port" -> node index
	for i, a := range c.addrs {
		want[a] = i
	}
	for i, s := range c.nodes {
		if s.Pid() == 0 {
			return fmt.Errorf("node %d (%s) is not running", i, s.Addr())
		}
		err := withNodeClient(s.Addr(), func(rc *redis.Client) error {
			info, err := rc.ClusterInfo(ctx).Result()
			if err != nil {
				return fmt.Errorf("CLUSTER INFO: %w", err)
			}
			fields := infoFields(info)
			for k, v := range map[string]string{
				"cluster_state":          "ok",
				"cluster_slots_assigned": strconv.Itoa(clusterSlots),
				"cluster_slots_ok":       strconv.Itoa(clusterSlots),
				"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
			} {
				if fields[k] != v {
					return fmt.Errorf("CLUSTER INFO says %s:%s, want %s", k, fields[k], v)
				}
			}
			nodes, err := rc.ClusterNodes(ctx).Result()
			if err != nil {
				return fmt.Errorf("CLUSTER NODES: %w", err)
			}
			return c.checkNodes(nodes, want)
		})
		if err != nil {
			return fmt.Errorf("node %d (%s): %w", i, s.Addr(), err)
		}
	}
	return nil
}

// checkNodes checks one node's CLUSTER NODES: every node listed at its
// address, connected, not failing, a master serving the slots it should.
func (c *Cluster) checkNodes(nodes string, want map[string]int) error {
	seen := make(map[int]bool)
	owner := make([]int, clusterSlots) // node index + 1, 0 = unassigned
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		i, ok := want[addr]
		if !ok {
			return fmt.Errorf("CLUSTER NODES lists %s at %q, not the address of a node", f[0], f[1])
		}
		seen[i] = true
		for flag := range strings.SplitSeq(f[2], ",") {
			switch flag {
			case "fail", "fail?", "handshake", "noaddr", "slave":
				return fmt.Errorf("node %d is flagged %q", i, f[2])
			}
		}
		if f[7] != "connected" {
			return fmt.Errorf("node %d link is %s", i, f[7])
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				return fmt.Errorf("node %d has a slot in migration: %s", i, r)
			}
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a < 0 || b >= clusterSlots || a > b {
				return fmt.Errorf("node %d: bad slot range %q", i, r)
			}
			for slot := a; slot <= b; slot++ {
				owner[slot] = i + 1
			}
		}
	}
	if len(seen) != len(c.nodes) {
		return fmt.Errorf("CLUSTER NODES lists %d of the %d nodes", len(seen), len(c.nodes))
	}
	for slot, o := range owner {
		if w := c.masterForSlot(slot); o != w+1 {
			return fmt.Errorf("slot %d is served by node %d, want node %d", slot, o-1, w)
		}
	}
	return nil
}

// infoFields parses "name:value" lines.
func infoFields(info string) map[string]string {
	m := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}

func (c *Cluster) logTails(n int) string {
	var b strings.Builder
	for i, s := range c.nodes {
		fmt.Fprintf(&b, "\n--- node %d (%s) log tail ---\n%s", i, s.Addr(), s.logTail(n))
	}
	return b.String()
}

// startClusterNode starts the node on a free port and, unless legacyBus,
// a free cluster bus port (--cluster-port), both kept for Restart;
// legacyBus uses the fixed bus port, the client port + 10000. It retries
// with other ports when one was taken meanwhile, and returns the bus port.
func (s *Server) startClusterNode(legacyBus bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	base := slices.Clip(s.args)
	for i := 1; ; i++ {
		port, bus, err := freeClusterPorts(legacyBus)
		if err != nil {
			return 0, fmt.Errorf("pick free ports: %v", err)
		}
		s.port, s.args = port, base
		if !legacyBus {
			s.args = append(base, "--cluster-port", strconv.Itoa(bus))
		}
		err = s.startLocked()
		if err == nil {
			return bus, nil
		}
		if i < bindRetries && errors.Is(err, errPortTaken) {
			continue
		}
		return 0, fmt.Errorf("start redis-server on port %d (bus %d): %v\n--- log tail ---\n%s", port, bus, err, s.logTail(30))
	}
}

// freeClusterPorts reserves a client port and a cluster bus port: any two
// free ports, or with legacyBus a port whose port + 10000 is free too.
func freeClusterPorts(legacyBus bool) (port, bus int, err error) {
	if !legacyBus {
		if port, err = freePort(); err != nil {
			return 0, 0, err
		}
		bus, err = freePort()
		return port, bus, err
	}
	for range 100 {
		if port, err = freePort(); err != nil {
			return 0, 0, err
		}
		bus = port + 10000
		if bus > 65535 {
			continue
		}
		reserved.Lock()
		taken := reserved.ports[bus]
		reserved.ports[bus] = true
		reserved.Unlock()
		if taken {
			continue
		}
		l, lerr := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(bus)))
		if lerr != nil {
			continue
		}
		_ = l.Close()
		return port, bus, nil
	}
	return 0, 0, errors.New("no free port with a free port + 10000 found")
}

var versions sync.Map // binary path -> major version

// serverMajor returns the major version of the redis-server at bin, from
// `redis-server --version` ("Redis server v=7.0.15 ..."), or 0 if unknown.
func serverMajor(bin string) int {
	if v, ok := versions.Load(bin); ok {
		return v.(int)
	}
	major := 0
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		if _, rest, ok := strings.Cut(string(out), "v="); ok {
			num, _, _ := strings.Cut(rest, ".")
			major, _ = strconv.Atoi(num)
		}
	}
	versions.Store(bin, major)
	return major
}

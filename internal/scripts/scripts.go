// Package scripts holds every Lua script the library runs, each in a .lua
// file of its own beside this one, embedded at build time. The comment at
// the top of each file gives its KEYS, ARGV and reply; the callers are in
// the engine, ownership, inspect and redisregistry packages.
package scripts

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed deadletter.lua
	deadLetterSrc string
	//go:embed lease.lua
	leaseSrc string
	//go:embed stale_consumers.lua
	staleConsumersSrc string
	//go:embed remove_self.lua
	removeSelfSrc string
	//go:embed acquire.lua
	acquireSrc string
	//go:embed renew.lua
	renewSrc string
	//go:embed release.lua
	releaseSrc string
	//go:embed heartbeat.lua
	heartbeatSrc string
	//go:embed adopt.lua
	adoptSrc string
	//go:embed registry_lookup.lua
	registryLookupSrc string
	//go:embed registry_status.lua
	registryStatusSrc string
	//go:embed redrive.lua
	redriveSrc string
)

// The scripts. go-redis runs each with EVALSHA and falls back to EVAL when
// the server does not have it cached.
var (
	// DeadLetter moves a pending entry to the dead-letter stream, then
	// acknowledges it (deadletter.lua).
	DeadLetter = redis.NewScript(deadLetterSrc)
	// Lease renews the consumer's claim on the entries it holds (lease.lua).
	Lease = redis.NewScript(leaseSrc)
	// StaleConsumers deletes departed consumers that hold nothing
	// (stale_consumers.lua).
	StaleConsumers = redis.NewScript(staleConsumersSrc)
	// RemoveSelf deletes the consumer from its group if it holds nothing
	// (remove_self.lua).
	RemoveSelf = redis.NewScript(removeSelfSrc)
	// Acquire takes or renews a partition's owner key (acquire.lua).
	Acquire = redis.NewScript(acquireSrc)
	// Renew extends a partition's owner key still held (renew.lua).
	Renew = redis.NewScript(renewSrc)
	// Release deletes a partition's owner key still held (release.lua).
	Release = redis.NewScript(releaseSrc)
	// Heartbeat refreshes the consumer in the member set (heartbeat.lua).
	Heartbeat = redis.NewScript(heartbeatSrc)
	// Adopt moves the group's pending entries of a partition to the
	// consumer (adopt.lua).
	Adopt = redis.NewScript(adoptSrc)
	// RegistryLookup reads a task by operation id, then task id
	// (registry_lookup.lua).
	RegistryLookup = redis.NewScript(registryLookupSrc)
	// RegistryStatus compares and sets a task's status
	// (registry_status.lua).
	RegistryStatus = redis.NewScript(registryStatusSrc)
	// Redrive moves a dead letter back to its stream (redrive.lua).
	Redrive = redis.NewScript(redriveSrc)
)

// Reply codes of DeadLetter.
const (
	DeadLetterNotPending = 0  // no longer pending: nothing written
	DeadLetterMoved      = 1  // moved whole
	DeadLetterOversize   = 2  // moved as oversize: too many fields or bytes to copy
	DeadLetterGone       = -1 // mode "copy": the stream no longer holds the entry
)

// Modes of DeadLetter.
const (
	ModeCopy  = "copy"  // copy the entry's fields from the stream, server-side
	ModeGiven = "given" // the fields follow the metadata in ARGV
)

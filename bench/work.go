package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/metrics"
	"syscall"
	"time"
	"unsafe"

	"github.com/streamrelay/completion"
)

// decodeEntry decodes an entry's data field with the decoder the library's
// consumer uses (completion.Message's UnmarshalJSON, public), so that every
// implementation pays the same for decoding and a comparison shows the
// loops' own costs, not a faster or slower decoder. The decoder copies what
// it keeps, so the string's bytes are read in place.
func decodeEntry(data string) (completion.Message, error) {
	return decodeBytes(unsafe.Slice(unsafe.StringData(data), len(data)))
}

// decodeBytes is decodeEntry for a payload held as bytes.
func decodeBytes(data []byte) (completion.Message, error) {
	var m completion.Message
	err := m.UnmarshalJSON(data)
	return m, err
}

// resultBody is the result every message carries, as a handler's own type:
// every implementation's handler decodes it with encoding/json, as a real
// handler would before it acts on the result, so that a comparison measures
// each implementation's own costs beside the same work.
type resultBody struct {
	T       int64  `json:"t"`
	Status  string `json:"status"`
	AgentID string `json:"agent_id"`
	Output  struct {
		Items []int  `json:"items"`
		Note  string `json:"note"`
	} `json:"output"`
	Tokens int `json:"tokens"`
}

// resultJSON is message i's result, stamped with the time now; "t" comes
// first, where publishTime looks.
func resultJSON(now time.Time) string {
	return fmt.Sprintf(`{"t":%d,"status":"completed","agent_id":"agent-42","output":{"items":[1,2,3],"note":"héllo <world> & more"},"tokens":1234}`, now.UnixNano())
}

// work is the handler's work: decode the result, then count the message.
// A result that does not decode is an error of the run.
func (e *env) work(result []byte) error {
	var body resultBody
	if err := json.Unmarshal(result, &body); err != nil {
		return fmt.Errorf("the handler cannot decode the result %q: %w", result, err)
	}
	e.handle(result)
	return nil
}

// lookup finds message (op, task)'s task in the run's registry, as the
// library's consumer does before its handler, so that every implementation
// pays for the same lookup.
func (e *env) lookup(ctx context.Context, op, task string) error {
	_, err := e.fx.mem.LookupTask(ctx, op, task)
	return err
}

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gcCPUTime is the Go runtime's estimate of the CPU time its garbage
// collector has used so far (runtime/metrics /cpu/classes/gc/total), to
// tell a loop's own CPU from what its garbage costs.
func gcCPUTime() time.Duration {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return time.Duration(s[0].Value.Float64() * float64(time.Second))
}

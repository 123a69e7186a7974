package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
)

// field is one field of an entry, whole.
type field struct{ Name, Value string }

// messageView is a decoded message, whole.
type messageView struct {
	Message   *completion.Message
	Result    string // indented JSON
	DecodeErr string
	// The task from Options.Registry.
	HasRegistry bool
	Task        *completion.Task
	TaskErr     string
}

// entryView is the entry detail page.
type entryView struct {
	Ref    string
	Entry  inspect.Entry
	Fields []field
	Msg    messageView
}

// deadLetterView is the dead-letter detail page.
type deadLetterView struct {
	Ref          string
	DL           inspect.DeadLetter
	Fields       []field
	Msg          messageView
	SourceRef    string // the source entry's Ref
	SourceExists bool   // the source entry is still in the stream
}

func (h *Handler) entry(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	ref := r.FormValue("ref")
	e, ok, err := s.in.Entry(r.Context(), ref)
	switch {
	case err != nil:
		h.fail(w, r, statusOf(err), err)
		return
	case !ok:
		h.fail(w, r, http.StatusNotFound, fmt.Errorf("stream %q holds no entry %q (any more: it may have been trimmed or deleted)", s.name, ref))
		return
	}
	v := entryView{Ref: ref, Entry: e, Fields: sortedFields(e.Fields), Msg: h.messageOf(r.Context(), e.Message, e.DecodeErr)}
	h.render(w, r, http.StatusOK, "entry", "Entry "+ref, s, v)
}

func (h *Handler) deadLetter(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	ref := r.FormValue("ref")
	dl, ok, err := s.in.DeadLetter(r.Context(), ref)
	switch {
	case errors.Is(err, inspect.ErrAmbiguousID):
		h.fail(w, r, http.StatusConflict, err)
		return
	case err != nil:
		h.fail(w, r, statusOf(err), err)
		return
	case !ok:
		h.fail(w, r, http.StatusNotFound, fmt.Errorf("stream %q has no dead letter %q (any more: it may have been redriven or purged)", s.name, ref))
		return
	}
	v := deadLetterView{Ref: dl.Ref, DL: dl, Fields: sortedFields(dl.Fields), Msg: h.messageOf(r.Context(), dl.Message, dl.DecodeErr)}
	if dl.SourceID != "" {
		v.SourceRef = sourceRef(s, dl)
		_, v.SourceExists, _ = s.in.Entry(r.Context(), v.SourceRef)
	}
	h.render(w, r, http.StatusOK, "deadletter", "Dead letter "+dl.Ref, s, v)
}

// sourceRef names the entry dead letter dl came from.
func sourceRef(s *stream, dl inspect.DeadLetter) string {
	if s.in.Config().Partitions > 1 {
		return fmt.Sprintf("%d/%s", dl.Partition, dl.SourceID)
	}
	return dl.SourceID
}

// messageOf describes a decoded message and looks its task up.
func (h *Handler) messageOf(ctx context.Context, m *completion.Message, decodeErr error) messageView {
	v := messageView{Message: m, HasRegistry: h.opts.Registry != nil}
	if m == nil {
		if decodeErr != nil {
			v.DecodeErr = decodeErr.Error()
		}
		return v
	}
	if len(m.Result) > 0 {
		v.Result = pretty(m.Result)
	}
	if h.opts.Registry == nil {
		return v
	}
	task, err := h.opts.Registry.LookupTask(ctx, m.OperationID, m.TaskID)
	switch {
	case errors.Is(err, completion.ErrTaskNotFound):
		v.TaskErr = "the registry knows neither the operation nor the task"
	case err != nil:
		v.TaskErr = err.Error()
	default:
		v.Task = &task
	}
	return v
}

// sortedFields returns fields by name.
func sortedFields(m map[string]string) []field {
	out := make([]field, 0, len(m))
	for k, v := range m {
		out = append(out, field{k, v})
	}
	slices.SortFunc(out, func(a, b field) int { return strings.Compare(a.Name, b.Name) })
	return out
}

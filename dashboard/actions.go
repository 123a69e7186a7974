package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/streamrelay/completion"
	"github.com/streamrelay/completion/inspect"
)

// maxFormBytes bounds an action's form.
const maxFormBytes = 1 << 20

// errReadOnly is the refusal of every POST when actions are disabled.
var errReadOnly = errors.New("actions are disabled: this dashboard is read-only (dashboard.Options.Actions; completion serve -write)")

// actionReq is an action, parsed from its form.
type actionReq struct {
	Action string   // redrive, purge, publish
	Scope  string   // redrive and purge: one, selected, reason, all
	Refs   []string // with scope one and selected
	Reason string   // with scope reason
	Msg    completion.Message
}

// confirmView is the confirmation page of an action.
type confirmView struct {
	Req    actionReq
	What   string // what the action will do
	Path   string // where the confirmation posts to
	Hidden []kv   // the action's form, to post again
	Back   string // where Cancel leads
}

// resultView is the page after an action.
type resultView struct {
	Done string // what was done
	Err  string // why it stopped, if it did
	Back string
}

// kv is a form field.
type kv struct{ Name, Value string }

func (h *Handler) publishForm(w http.ResponseWriter, r *http.Request) {
	s, err := h.streamOf(r)
	switch {
	case !h.opts.Actions:
		h.fail(w, r, http.StatusForbidden, errReadOnly)
	case err != nil:
		h.fail(w, r, http.StatusNotFound, err)
	default:
		h.render(w, r, http.StatusOK, "publish", "Publish a test completion", s, nil)
	}
}

// action serves POST /actions/{action}: the confirmation, then the action.
func (h *Handler) action(w http.ResponseWriter, r *http.Request) {
	if !h.opts.Actions {
		h.fail(w, r, http.StatusForbidden, errReadOnly)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, fmt.Errorf("the form could not be read: %w", err))
		return
	}
	if err := h.checkToken(r); err != nil {
		h.fail(w, r, http.StatusForbidden, err)
		return
	}
	s, err := h.streamOf(r)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	req, err := h.parseAction(r.PathValue("action"), r.PostForm)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	back := h.backLink(s, req)
	if r.PostFormValue("confirm") != "yes" {
		v := confirmView{Req: req, What: h.describe(r.Context(), s, req), Path: h.opts.Prefix + "actions/" + req.Action,
			Hidden: append([]kv{{"stream", s.name}}, req.form()...), Back: back}
		h.render(w, r, http.StatusOK, "confirm", "Confirm", s, v)
		return
	}
	done, err := h.do(r.Context(), s, req)
	v := resultView{Done: done, Back: back}
	status := http.StatusOK
	if err != nil {
		v.Err = err.Error()
		status = http.StatusInternalServerError
		if errors.Is(err, inspect.ErrNotRedrivable) || errors.Is(err, inspect.ErrAmbiguousID) {
			status = http.StatusConflict
		}
		h.opts.Logger.Warn("dashboard: action failed", "stream", s.name, "action", req.Action, "err", err)
	}
	h.render(w, r, status, "result", "Done", s, v)
}

// parseAction reads an action from its form.
func (h *Handler) parseAction(action string, f url.Values) (actionReq, error) {
	req := actionReq{Action: action, Scope: f.Get("scope"), Refs: f["ref"], Reason: f.Get("reason")}
	if one := f.Get("one"); one != "" {
		req.Scope, req.Refs = "one", []string{one}
	}
	switch action {
	case "publish":
		return req, parsePublish(&req, f)
	case "redrive", "purge":
	default:
		return req, fmt.Errorf("there is no action %q (want redrive, purge or publish)", action)
	}
	switch req.Scope {
	case "one", "selected":
		if len(req.Refs) == 0 {
			return req, errors.New("no dead letter selected: tick the ones to act on")
		}
		if len(req.Refs) > MaxPageSize || req.Scope == "one" && len(req.Refs) > 1 {
			return req, fmt.Errorf("%d dead letters selected; at most %d at once (one with scope one)", len(req.Refs), MaxPageSize)
		}
		req.Reason = ""
	case "reason":
		if action == "purge" || req.Reason == "" {
			return req, errors.New("by reason, dead letters can be redriven, not purged, and the reason must be given")
		}
		req.Refs = nil
	case "all":
		req.Refs, req.Reason = nil, ""
	default:
		return req, fmt.Errorf("scope %q: want one, selected, reason or all", req.Scope)
	}
	return req, nil
}

// parsePublish reads a test completion from its form.
func parsePublish(req *actionReq, f url.Values) error {
	req.Scope, req.Refs, req.Reason = "", nil, ""
	m := completion.Message{OperationID: f.Get("op"), TaskID: f.Get("task"), Success: f.Get("success") != "false", Error: f.Get("error")}
	if res := f.Get("result"); res != "" {
		m.Result = json.RawMessage(res)
	}
	switch {
	case m.OperationID == "" || m.TaskID == "":
		return errors.New("the operation id and the task id are required")
	case m.Success && m.Error != "":
		return errors.New("an error text goes with a failure (success false)")
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("the completion is not valid: %w (a result is JSON: an object, a \"string\" or null)", err)
	}
	req.Msg = m
	return nil
}

// form returns the fields that post req again.
func (req actionReq) form() []kv {
	if req.Action == "publish" {
		out := []kv{{"op", req.Msg.OperationID}, {"task", req.Msg.TaskID}, {"success", strconv.FormatBool(req.Msg.Success)}, {"error", req.Msg.Error}}
		if len(req.Msg.Result) > 0 {
			out = append(out, kv{"result", string(req.Msg.Result)})
		}
		return out
	}
	out := []kv{{"scope", req.Scope}}
	for _, ref := range req.Refs {
		out = append(out, kv{"ref", ref})
	}
	if req.Reason != "" {
		out = append(out, kv{"reason", req.Reason})
	}
	return out
}

// describe says what req will do, for its confirmation.
func (h *Handler) describe(ctx context.Context, s *stream, req actionReq) string {
	switch req.Action {
	case "publish":
		p, key := s.in.PartitionFor(req.Msg.TaskID)
		where := key
		if s.in.Config().Partitions > 1 {
			where = fmt.Sprintf("%s (partition %d)", key, p)
		}
		return fmt.Sprintf("Publish a test completion of operation %q, task %q, success %v, to %s.", req.Msg.OperationID, req.Msg.TaskID, req.Msg.Success, where)
	}
	verb := map[string]string{"redrive": "Move back to the stream", "purge": "Delete for good"}[req.Action]
	switch req.Scope {
	case "one", "selected":
		n := int64(len(req.Refs))
		return fmt.Sprintf("%s %d dead %s of stream %q:", verb, n, plural(n, "letter", "letters"), s.name)
	case "reason":
		return fmt.Sprintf("%s every dead letter of reason %q of stream %q.", verb, req.Reason, s.name)
	}
	what := "every dead letter"
	if si, err := s.in.Info(ctx); err == nil {
		what = fmt.Sprintf("every dead letter (%d now)", si.DeadLetterLength)
	}
	return fmt.Sprintf("%s %s of stream %q.", verb, what, s.name)
}

// do carries req out and says what it did.
func (h *Handler) do(ctx context.Context, s *stream, req actionReq) (string, error) {
	if req.Action == "publish" {
		id, err := s.in.PublishTest(ctx, req.Msg)
		if err != nil {
			return "Nothing was published.", err
		}
		_, key := s.in.PartitionFor(req.Msg.TaskID)
		return fmt.Sprintf("Published entry %s to %s.", id, key), nil
	}
	var n int
	var err error
	switch {
	case req.Action == "redrive" && req.Scope == "reason":
		n, err = s.in.RedriveReason(ctx, req.Reason)
	case req.Action == "redrive" && req.Scope == "all":
		n, err = s.in.RedriveAll(ctx)
	case req.Action == "redrive":
		n, err = s.in.Redrive(ctx, req.Refs...)
	case req.Scope == "all":
		n, err = s.in.PurgeAll(ctx)
	default:
		n, err = s.in.Purge(ctx, req.Refs...)
	}
	if req.Action == "redrive" {
		return fmt.Sprintf("Moved %d dead %s back to stream %q.", n, plural(int64(n), "letter", "letters"), s.name), err
	}
	return fmt.Sprintf("Deleted %d dead %s of stream %q.", n, plural(int64(n), "letter", "letters"), s.name), err
}

// backLink is where the pages of req lead back to.
func (h *Handler) backLink(s *stream, req actionReq) string {
	p := page{Prefix: h.opts.Prefix}
	if req.Action == "publish" {
		return p.Link("", "stream", s.name)
	}
	return p.Link("dead", "stream", s.name, "reason", req.Reason)
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

package wire

// The fields of a dead-letter entry besides the original entry's fields,
// and its reasons. The root package exports them (completion.Reason...,
// completion.DeadLetter...Field), where they are documented.
const (
	ReasonMalformed     = "malformed"
	ReasonOversize      = "oversize"
	ReasonTaskNotFound  = "task_not_found"
	ReasonInvalidTask   = "invalid_task"
	ReasonTaskMismatch  = "task_mismatch"
	ReasonPermanent     = "permanent_error"
	ReasonMaxDeliveries = "max_deliveries"

	DeadLetterReasonField     = "dl_reason"
	DeadLetterErrorField      = "dl_error"
	DeadLetterDeliveriesField = "dl_deliveries"
	DeadLetterConsumerField   = "dl_consumer"
	DeadLetterGroupField      = "dl_group"
	DeadLetterStreamField     = "dl_stream"
	DeadLetterIDField         = "dl_source_id"
	DeadLetterTimeField       = "dl_time"
	DeadLetterSizeField       = "dl_size"
	DeadLetterFieldsField     = "dl_fields"
	DeadLetterExcerptField    = "dl_excerpt"

	// DeadLetterFieldPrefix starts the name of every dead-letter field.
	DeadLetterFieldPrefix = "dl_"
	// OrigFieldPrefix is put before an original field's name that starts
	// with DeadLetterFieldPrefix or OrigFieldPrefix, and stripped once by a
	// redrive.
	OrigFieldPrefix = "orig_"

	// MaxEntryFields is the most fields an entry may have to be copied
	// whole into its dead letter (completion.MaxEntryFields).
	MaxEntryFields = 1000
	// MaxDeadLetterErrorBytes caps the error text of a dead letter.
	MaxDeadLetterErrorBytes = 1024
	// MaxExcerptBytes is the length of an oversize entry's excerpt.
	MaxExcerptBytes = 256
)

// EntryBytes returns the size of an entry as MaxPayloadBytes counts it: its
// values, and the names of its fields other than DataField. It does not
// allocate.
func EntryBytes(values map[string]any) int {
	n := 0
	for k, v := range values {
		if k != DataField {
			n += len(k)
		}
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	return n
}

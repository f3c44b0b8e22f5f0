package session

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/robotfleet/fleetlink/protocol"
)

// record is one session as the journal stores it: enough to answer
// list_sessions and duplicate commands, re-run a queued session after a
// restart, and kill what a running one left behind after a crash.
type record struct {
	ID          string                  `json:"id"`
	Order       uint64                  `json:"order"` // creation order, from the bucket's sequence
	CommandID   string                  `json:"command_id,omitempty"`
	ReplyStatus string                  `json:"reply_status,omitempty"` // status given in the start_session reply
	Pipeline    string                  `json:"pipeline"`
	Model       string                  `json:"model"`
	Params      map[string]any          `json:"params,omitempty"`
	Status      string                  `json:"status"`
	Percent     float64                 `json:"percent"`
	Stage       string                  `json:"stage,omitempty"`
	Message     string                  `json:"message,omitempty"`
	EtaS        *float64                `json:"eta_s,omitempty"`
	CreatedAt   time.Time               `json:"created_at"`
	StartedAt   *time.Time              `json:"started_at,omitempty"`
	FinishedAt  *time.Time              `json:"finished_at,omitempty"`
	Result      *protocol.SessionResult `json:"result,omitempty"`
	Error       *protocol.ErrorInfo     `json:"error,omitempty"`
	PGID        int                     `json:"pgid,omitempty"`   // process group of a running exec session
	PStart      uint64                  `json:"pstart,omitempty"` // its leader's start time, /proc/PID/stat ticks
}

func (r *record) finished() bool {
	return r.Status == protocol.StatusCompleted || r.Status == protocol.StatusFailed || r.Status == protocol.StatusCancelled
}

var bucketSessions = []byte("sessions")

// journal is the bbolt file <state_dir>/sessions.db. Every write is one
// fsynced transaction; bbolt's file lock also keeps a second agent off the
// same state directory.
type journal struct {
	db *bolt.DB
}

func openJournal(path string) (*journal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrJournal, path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSessions)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: init %s: %w", ErrJournal, path, err)
	}
	return &journal{db: db}, nil
}

// load returns every record, oldest first. Records that do not decode are
// skipped and reported in bad.
func (j *journal) load() (recs []*record, bad []string, err error) {
	err = j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			r := &record{}
			if err := json.Unmarshal(v, r); err != nil || r.ID != string(k) {
				bad = append(bad, string(k))
				return nil
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: load: %w", ErrJournal, err)
	}
	slices.SortFunc(recs, func(a, b *record) int { return int64cmp(int64(a.Order), int64(b.Order)) })
	return recs, bad, nil
}

func int64cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// put stores r, giving it an Order first when it has none.
func (j *journal) put(r *record) error {
	err := j.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		if r.Order == 0 {
			n, err := b.NextSequence()
			if err != nil {
				return err
			}
			r.Order = n
		}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(r.ID), v)
	})
	if err != nil {
		return fmt.Errorf("%w: put %s: %w", ErrJournal, r.ID, err)
	}
	return nil
}

// remove deletes the records of ids.
func (j *journal) remove(ids ...string) error {
	err := j.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		for _, id := range ids {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: remove: %w", ErrJournal, err)
	}
	return nil
}

func (j *journal) close() error { return j.db.Close() }

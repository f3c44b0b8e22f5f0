package command

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/robotfleet/fleetlink/protocol"
)

// Store limits.
const (
	// DefaultStoreEntries is how many command ids the store remembers.
	DefaultStoreEntries = 4096
	// maxStoredReply: larger replies (long session lists, read-only) are
	// remembered by id only; a duplicate of such a command runs again.
	maxStoredReply = 16 << 10
)

var (
	bucketCmds  = []byte("commands") // id → storedCmd (JSON)
	bucketOrder = []byte("order")    // sequence → id, oldest first
)

type storedCmd struct {
	Order uint64                 `json:"order"`
	At    time.Time              `json:"at"`
	Reply *protocol.CommandReply `json:"reply,omitempty"`
}

// Store is the durable memory of recent command ids and their replies,
// <state_dir>/commands.db (bbolt, every write synced): a command is never
// executed twice, also across agent restarts. It keeps the newest
// Entries ids; each write is one transaction, which costs a sync per
// command (commands are rare).
type Store struct {
	db  *bolt.DB
	max int
}

// OpenStore opens (creating) the store at path, keeping at most entries ids
// (zero means DefaultStoreEntries).
func OpenStore(path string, entries int) (*Store, error) {
	if entries <= 0 {
		entries = DefaultStoreEntries
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("command store: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCmds, bucketOrder} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("command store: init %s: %w", path, err)
	}
	return &Store{db: db, max: entries}, nil
}

// Get returns what the store knows of command id: seen, and its reply
// when it was small enough to keep.
func (s *Store) Get(id string) (reply *protocol.CommandReply, seen bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCmds).Get([]byte(id))
		if v == nil {
			return nil
		}
		var c storedCmd
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		seen, reply = true, c.Reply
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("command store: get %s: %w", id, err)
	}
	return reply, seen, nil
}

// Put remembers id with its reply (kept only when small), forgetting the
// oldest ids beyond the cap.
func (s *Store) Put(id string, reply protocol.CommandReply, at time.Time) error {
	c := storedCmd{At: at.UTC(), Reply: &reply}
	if b, err := json.Marshal(reply); err != nil || len(b) > maxStoredReply {
		c.Reply = nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		cmds, order := tx.Bucket(bucketCmds), tx.Bucket(bucketOrder)
		if cmds.Get([]byte(id)) != nil {
			return nil // the first reply stays
		}
		n, err := order.NextSequence()
		if err != nil {
			return err
		}
		c.Order = n
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := cmds.Put([]byte(id), v); err != nil {
			return err
		}
		if err := order.Put(u64(n), []byte(id)); err != nil {
			return err
		}
		// Sequences are consecutive: the newest max are n-max+1 .. n.
		for {
			k, old := order.Cursor().First()
			if k == nil || binary.BigEndian.Uint64(k)+uint64(s.max) > n {
				return nil
			}
			if err := cmds.Delete(old); err != nil {
				return err
			}
			if err := order.Delete(k); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return fmt.Errorf("command store: put %s: %w", id, err)
	}
	return nil
}

// Len returns how many ids the store holds.
func (s *Store) Len() int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketCmds).Stats().KeyN; return nil })
	return n
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

package broker

import "sync"

// retainedIndex accounts the broker's retained messages per owning account
// and in total, so one robot cannot fill the broker's memory with retained
// messages that are kept forever. Robots are capped per account: a new
// retained message past the cap first evicts that robot's oldest retained
// session state (a robot retains one per session, for ever more sessions);
// status and metrics are never evicted. Accounts without a per-account cap
// (the relay, admins, anonymous on loopback) share owner "". The total cap
// refuses new retained messages outright.
type retainedIndex struct {
	perOwner      int   // messages per capped owner
	perOwnerBytes int   // bytes per capped owner
	total         int   // messages
	totalBytes    int64 // bytes

	mu     sync.Mutex
	topics map[string]retEntry  // guarded by mu
	owners map[string]*ownerUse // guarded by mu
	count  int                  // guarded by mu
	bytes  int64                // guarded by mu
	seq    uint64               // guarded by mu; orders writes for eviction
}

type retEntry struct {
	owner     string
	bytes     int
	seq       uint64
	evictable bool
}

type ownerUse struct {
	count, bytes int
	topics       map[string]struct{}
}

func newRetainedIndex(perOwner, perOwnerBytes, total int, totalBytes int64) *retainedIndex {
	return &retainedIndex{perOwner: perOwner, perOwnerBytes: perOwnerBytes, total: total, totalBytes: totalBytes,
		topics: map[string]retEntry{}, owners: map[string]*ownerUse{}}
}

// admit decides whether owner may retain size bytes on topic. capped applies
// the per-owner caps, evicting the owner's oldest evictable messages (other
// than topic) to make room; the caller deletes the returned topics from the
// broker. It does not record the message: record does, once retained.
func (x *retainedIndex) admit(owner string, capped bool, topic string, size int) (ok bool, evict []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	old, replacing := x.topics[topic]
	count, bytes := x.count, x.bytes
	if replacing {
		count--
		bytes -= int64(old.bytes)
	}
	if capped {
		use := x.owners[owner]
		oc, ob := 0, 0
		if use != nil {
			oc, ob = use.count, use.bytes
		}
		if replacing && old.owner == owner {
			oc--
			ob -= old.bytes
		}
		gone := map[string]bool{}
		for oc+1 > x.perOwner || ob+size > x.perOwnerBytes {
			victim, ok := x.oldestEvictable(use, topic, gone)
			if !ok {
				return false, nil
			}
			e := x.topics[victim]
			gone[victim] = true
			evict = append(evict, victim)
			oc--
			ob -= e.bytes
			count--
			bytes -= int64(e.bytes)
		}
	}
	if count+1 > x.total || bytes+int64(size) > x.totalBytes {
		return false, nil
	}
	for _, t := range evict {
		x.removeLocked(t)
	}
	return true, evict
}

func (x *retainedIndex) oldestEvictable(use *ownerUse, except string, gone map[string]bool) (string, bool) {
	if use == nil {
		return "", false
	}
	var best string
	var bestSeq uint64
	for t := range use.topics {
		e := x.topics[t]
		if !e.evictable || t == except || gone[t] {
			continue
		}
		if best == "" || e.seq < bestSeq {
			best, bestSeq = t, e.seq
		}
	}
	return best, best != ""
}

// record notes that topic now retains size bytes written by owner.
func (x *retainedIndex) record(owner, topic string, size int, evictable bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(topic)
	x.seq++
	x.topics[topic] = retEntry{owner: owner, bytes: size, seq: x.seq, evictable: evictable}
	use := x.owners[owner]
	if use == nil {
		use = &ownerUse{topics: map[string]struct{}{}}
		x.owners[owner] = use
	}
	use.count++
	use.bytes += size
	use.topics[topic] = struct{}{}
	x.count++
	x.bytes += int64(size)
}

// remove forgets topic's retained message.
func (x *retainedIndex) remove(topic string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(topic)
}

func (x *retainedIndex) removeLocked(topic string) {
	e, ok := x.topics[topic]
	if !ok {
		return
	}
	delete(x.topics, topic)
	if use := x.owners[e.owner]; use != nil {
		use.count--
		use.bytes -= e.bytes
		delete(use.topics, topic)
		if use.count == 0 {
			delete(x.owners, e.owner)
		}
	}
	x.count--
	x.bytes -= int64(e.bytes)
}

// totals returns the retained messages and bytes accounted.
func (x *retainedIndex) totals() (int, int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.count, x.bytes
}

package nodecache

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// cacheKey identifies a question: the name folded to lower case, type, class and the DO and CD
// bits (they change what an upstream puts in the answer).
type cacheKey struct {
	hash   uint64
	qtype  uint16
	qclass uint16
	do, cd bool
}

// newCacheKey is the key of a question whose name is lower case, in presentation form.
func newCacheKey(lower []byte, qtype, qclass uint16, do, cd bool) cacheKey {
	return cacheKey{hash: nameHash(lower), qtype: qtype, qclass: qclass, do: do, cd: cd}
}

// nameHash is FNV-1a over the lower-case name: no allocation on the hit path.
func nameHash(lower []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range lower {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// entry is one cached answer with its clock.
type entry struct {
	qname      string // lower case, presentation form; compared against hash collisions
	answer     *answer
	stored     time.Time
	expires    time.Time // end of the TTL
	staleUntil time.Time // end of the serve-stale window (== expires when serving stale is off)
	size       int
	key        cacheKey
	slot       int // index in the shard's list of its kind (guarded by the shard's lock)

	hits        atomic.Int32 // hits in the current prefetch window
	windowStart atomic.Int64 // unix nanos
	prefetching atomic.Bool
}

// remaining is the TTL left at now, in whole seconds (0 once expired).
func (e *entry) remaining(now time.Time) uint32 {
	d := e.expires.Sub(now)
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

const cacheShards = 16

// entryOverhead approximates the bytes an entry costs beyond its wire form (struct, map slot,
// offsets), so max_memory bounds what the process really holds.
const entryOverhead = 256

// cache is the process-wide answer cache shared by every nodecache server block.
type cache struct {
	shards [cacheShards]cacheShard
	limits atomic.Pointer[cacheLimits]
}

type cacheLimits struct {
	success, denial int   // entries per shard
	bytes           int64 // per shard
}

type cacheShard struct {
	mu              sync.RWMutex
	items           map[cacheKey]*entry
	kinds           [2][]listed // every entry, success then denial: eviction samples them at random
	success, denial int
	bytes           int64
}

func newCache(successCap, denialCap int, maxMemory int64) *cache {
	c := &cache{}
	for i := range c.shards {
		c.shards[i].items = make(map[cacheKey]*entry)
	}
	c.setLimits(successCap, denialCap, maxMemory)
	return c
}

// setLimits changes the bounds; entries over a lowered bound go as new ones arrive.
func (c *cache) setLimits(successCap, denialCap int, maxMemory int64) {
	per := func(n int) int { return max(1, (n+cacheShards-1)/cacheShards) }
	c.limits.Store(&cacheLimits{success: per(successCap), denial: per(denialCap), bytes: max(1, maxMemory/cacheShards)})
}

func (c *cache) shard(k cacheKey) *cacheShard { return &c.shards[k.hash%cacheShards] }

// get returns the entry for the question (its name lower case, presentation form) if it is
// fresh or within its stale window; an entry past that window is dropped.
func (c *cache) get(k cacheKey, lower []byte, now time.Time) *entry {
	s := c.shard(k)
	s.mu.RLock()
	e := s.items[k]
	s.mu.RUnlock()
	if e == nil || e.qname != string(lower) {
		return nil
	}
	if now.After(e.staleUntil) {
		s.mu.Lock()
		if s.items[k] == e {
			s.remove(k, e)
		}
		s.mu.Unlock()
		return nil
	}
	return e
}

// put stores a; ttl is already capped. staleFor is how long the entry may serve stale after it
// expires.
func (c *cache) put(k cacheKey, qname string, a *answer, ttl uint32, staleFor time.Duration, now time.Time) *entry {
	exp := now.Add(time.Duration(ttl) * time.Second)
	e := &entry{qname: qname, answer: a, stored: now, expires: exp, staleUntil: exp.Add(staleFor), size: len(a.wire) + entryOverhead, key: k}
	e.windowStart.Store(now.UnixNano())
	lim := c.limits.Load()
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.items[k]; old != nil {
		s.remove(k, old)
	}
	s.items[k] = e
	s.add(e)
	s.evict(lim, e, now)
	return e
}

// listed is an entry in its shard's list, with the times eviction compares, so a sample reads
// the list and not the entries.
type listed struct {
	e                   *entry
	expires, staleUntil int64 // unix nanos
}

func kindOf(e *entry) int {
	if e.answer.denial {
		return 1
	}
	return 0
}

func (s *cacheShard) add(e *entry) {
	if e.answer.denial {
		s.denial++
	} else {
		s.success++
	}
	s.bytes += int64(e.size)
	list := &s.kinds[kindOf(e)]
	e.slot = len(*list)
	*list = append(*list, listed{e: e, expires: e.expires.UnixNano(), staleUntil: e.staleUntil.UnixNano()})
}

func (s *cacheShard) remove(k cacheKey, e *entry) {
	delete(s.items, k)
	if e.answer.denial {
		s.denial--
	} else {
		s.success--
	}
	s.bytes -= int64(e.size)
	list := &s.kinds[kindOf(e)]
	last := len(*list) - 1
	moved := (*list)[last]
	(*list)[e.slot], moved.e.slot = moved, e.slot
	(*list)[last] = listed{}
	*list = (*list)[:last]
}

// evict drops entries until the shard is within its bounds, never the one just stored (keep).
// Each victim is the soonest to expire of a few neighbouring entries from a random place in the
// lists of the kinds over their bound (both when bytes are), and an entry past its stale window
// goes at once: constant work per insert, no scan of the shard, no bookkeeping on the hit path.
func (s *cacheShard) evict(lim *cacheLimits, keep *entry, now time.Time) {
	const sample = 8
	for {
		successOver, denialOver, bytesOver := s.success > lim.success, s.denial > lim.denial, s.bytes > lim.bytes
		if !successOver && !denialOver && !bytesOver {
			return
		}
		var victim *listed
		nowNanos := now.UnixNano()
	kinds:
		for kind, over := range [2]bool{successOver || bytesOver, denialOver || bytesOver} {
			list := s.kinds[kind]
			if !over || len(list) == 0 {
				continue
			}
			// A run of neighbours from a random start: a few cache lines, not one per sample. Slots
			// are refilled at random (a removal moves the last entry into the hole), so
			// neighbours are of any age.
			start := rand.IntN(len(list))
			for i := range min(sample, len(list)) {
				l := &list[(start+i)%len(list)]
				if l.e == keep {
					continue
				}
				if victim == nil || l.expires < victim.expires {
					victim = l
				}
				if nowNanos > l.staleUntil {
					break kinds
				}
			}
		}
		if victim == nil {
			return
		}
		s.remove(victim.e.key, victim.e)
	}
}

// counts returns the number of success and denial entries and the bytes they hold.
func (c *cache) counts() (success, denial int, bytes int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		success += s.success
		denial += s.denial
		bytes += s.bytes
		s.mu.RUnlock()
	}
	return success, denial, bytes
}

// cacheable is parseAnswer for a message: the form tests and non-wire paths use.
func cacheable(m *dns.Msg, successTTL, denialTTL time.Duration) (*answer, uint32, error) {
	raw, err := m.Pack()
	if err != nil {
		return nil, 0, err
	}
	if len(m.Question) != 1 {
		return nil, 0, errNotAnswer
	}
	return parseAnswer(raw, m.Question[0], successTTL, denialTTL)
}

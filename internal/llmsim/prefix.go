package llmsim

import (
	"container/list"
	"sync"
)

// FNV-1a 64-bit parameters. FNV is written out rather than taken from
// hash/fnv so that chaining costs no allocation per block.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

func fnvUint64(h, v uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= fnvPrime64
		v >>= 8
	}
	return h
}

// blockHashes splits text into full blocks of blockSize bytes and returns
// their chain hashes: each block's hash covers the previous hash and the
// block, so equal hashes mean equal prefixes. The chain starts from a hash
// of the model id, so models never share blocks (vLLM keys LoRA blocks the
// same way). A trailing partial block is not cached, as in vLLM.
func blockHashes(model, text string, blockSize int) []uint64 {
	n := len(text) / blockSize
	if n == 0 {
		return nil
	}
	out := make([]uint64, n)
	prev := fnvString(fnvOffset64, model)
	for i := range n {
		h := fnvUint64(fnvOffset64, prev)
		h = fnvString(h, text[i*blockSize:(i+1)*blockSize])
		out[i] = h
		prev = h
	}
	return out
}

// prefixCache is an LRU set of block hashes, standing in for vLLM's cached
// KV blocks.
type prefixCache struct {
	capacity int

	mu    sync.Mutex
	lru   list.List // of uint64 block hashes, most recently used first
	index map[uint64]*list.Element
}

func newPrefixCache(capacity int) *prefixCache {
	return &prefixCache{capacity: capacity, index: make(map[uint64]*list.Element)}
}

// match returns how many leading blocks of the chain are cached, then
// caches the whole chain. Blocks are touched from last to first so that a
// prompt's first blocks are the most recently used and its tail is evicted
// first: shared prefixes outlive their continuations, as vLLM frees a
// request's blocks in reverse order for the same reason.
func (c *prefixCache) match(chain []uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	hits := 0
	for hits < len(chain) {
		if _, ok := c.index[chain[hits]]; !ok {
			break
		}
		hits++
	}
	for i := len(chain) - 1; i >= 0; i-- {
		if e, ok := c.index[chain[i]]; ok {
			c.lru.MoveToFront(e)
			continue
		}
		c.index[chain[i]] = c.lru.PushFront(chain[i])
	}
	for c.lru.Len() > c.capacity {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.index, oldest.Value.(uint64))
	}
	return hits
}

// len returns the number of cached blocks.
func (c *prefixCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

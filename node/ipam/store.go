package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store makes allocations durable on the host. Put and Delete return only once the change
// is on disk, so an answer given to the CNI plugin survives kill -9 and power loss.
type Store interface {
	Load() (map[netip.Addr]Owner, error)
	Put(addr netip.Addr, o Owner) error
	Delete(addrs ...netip.Addr) error
	Close() error
}

const bucketName = "allocations"

// BoltStore is a Store in a bbolt file (one fsync'd transaction per change).
type BoltStore struct {
	db *bolt.DB
}

// OpenBoltStore opens (or creates) dir/ipam.db. A second agent on the same state dir
// waits for the file lock and then fails, instead of handing out the same addresses.
func OpenBoltStore(dir string) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, "ipam.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("open %s (is another hostroute-node running?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bucketName))
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Load reads every allocation.
func (s *BoltStore) Load() (map[netip.Addr]Owner, error) {
	out := map[netip.Addr]Owner{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketName)).ForEach(func(k, v []byte) error {
			addr, err := netip.ParseAddr(string(k))
			if err != nil {
				return fmt.Errorf("bad address key %q: %w", k, err)
			}
			var o Owner
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("bad owner of %s: %w", addr, err)
			}
			out[addr] = o
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load allocations: %w", err)
	}
	return out, nil
}

// Put records one allocation.
func (s *BoltStore) Put(addr netip.Addr, o Owner) error {
	v, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketName)).Put([]byte(addr.String()), v)
	}); err != nil {
		return fmt.Errorf("store allocation %s: %w", addr, err)
	}
	return nil
}

// Delete removes allocations.
func (s *BoltStore) Delete(addrs ...netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketName))
		for _, a := range addrs {
			if err := b.Delete([]byte(a.String())); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("delete allocations %v: %w", addrs, err)
	}
	return nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// MemStore is a Store in memory, for tests of the allocator; it can fail on demand.
type MemStore struct {
	M       map[netip.Addr]Owner
	FailPut error
}

// Load returns a copy of the map.
func (m *MemStore) Load() (map[netip.Addr]Owner, error) {
	out := map[netip.Addr]Owner{}
	for k, v := range m.M {
		out[k] = v
	}
	return out, nil
}

// Put stores one allocation, or fails with FailPut.
func (m *MemStore) Put(a netip.Addr, o Owner) error {
	if m.FailPut != nil {
		return m.FailPut
	}
	if m.M == nil {
		m.M = map[netip.Addr]Owner{}
	}
	m.M[a] = o
	return nil
}

// Delete removes allocations.
func (m *MemStore) Delete(addrs ...netip.Addr) error {
	for _, a := range addrs {
		delete(m.M, a)
	}
	return nil
}

// Close does nothing.
func (m *MemStore) Close() error { return nil }

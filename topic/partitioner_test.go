package topic

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka's own vectors, from UtilsTest.testMurmur2 (also franz-go's TestMurmur2KafkaVectors).
func TestMurmur2KafkaVectors(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want int32
	}{
		{[]byte("21"), -973932308},
		{[]byte("foobar"), -790332482},
		{[]byte("a-little-bit-long-string"), -985981536},
		{[]byte("a-little-bit-longer-string"), -1486304829},
		{[]byte("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971},
		{[]byte{'a', 'b', 'c'}, 479470107},
	} {
		if got := Murmur2(tc.in); got != tc.want {
			t.Errorf("Murmur2(%q) = %d, want %d", tc.in, got, tc.want)
		}
		// KeyPartition is toPositive(murmur2) % n.
		for _, n := range []int{1, 3, 12, 1000} {
			if got, want := KeyPartition(tc.in, n), int(tc.want&0x7fffffff)%n; got != want {
				t.Errorf("KeyPartition(%q, %d) = %d, want %d", tc.in, n, got, want)
			}
		}
	}
}

// randomKey returns a key of 0 to 63 random bytes (every tail length, high bytes included,
// which Java reads as negative).
func randomKey(r *rand.Rand) []byte {
	k := make([]byte, r.IntN(64))
	for i := range k {
		k[i] = byte(r.Uint32())
	}
	return k
}

// franz-go's default partitioner places keyed records exactly as Kafka's Java client does;
// ours must agree on every key. With n = 2^31-1 its choice is the 31-bit hash itself (but for
// one value), so that compares the hashes too.
func TestKeyPartitionMatchesFranzGo(t *testing.T) {
	kp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		key := randomKey(r)
		for _, n := range []int{1, 2, 3, 7, 16, 100, 1 << 20, math.MaxInt32} {
			want := kp.Partition(&kgo.Record{Key: key}, n)
			if got := KeyPartition(key, n); got != want {
				t.Fatalf("KeyPartition(%x, %d) = %d, franz-go says %d", key, n, got, want)
			}
		}
	}
	for _, key := range [][]byte{{}, {0xff}, {0x80, 0}, {0, 0, 0}, {0xff, 0xff, 0xff, 0xff}} {
		want := kp.Partition(&kgo.Record{Key: key}, math.MaxInt32)
		if got := KeyPartition(key, math.MaxInt32); got != want {
			t.Errorf("KeyPartition(%x) = %d, franz-go says %d", key, got, want)
		}
	}
}

func TestKeyPartitionProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 5000; i++ {
		key := randomKey(r)
		n := 1 + r.IntN(500)
		p := KeyPartition(key, n)
		if p < 0 || p >= n {
			t.Fatalf("KeyPartition(%x, %d) = %d, out of range", key, n, p)
		}
		if again := KeyPartition(append([]byte(nil), key...), n); again != p {
			t.Fatalf("KeyPartition(%x, %d) gave %d then %d", key, n, p, again)
		}
	}
	for _, n := range []int{0, -1, math.MinInt} {
		if got := KeyPartition([]byte("k"), n); got != -1 {
			t.Errorf("KeyPartition(k, %d) = %d, want -1", n, got)
		}
	}
}

// 10k random keys spread roughly uniformly: a chi-squared test at p = 0.001 (seeded, so
// deterministic). The keys are distinct (random 1 to 32 bytes, and "user-<i>" strings): the
// same key always lands on the same partition, so repeated keys would skew any hash.
func TestKeyPartitionDistribution(t *testing.T) {
	// Critical chi-squared values at p = 0.001 for n-1 degrees of freedom.
	critical := []struct {
		n    int
		crit float64
	}{{2, 10.83}, {3, 13.82}, {6, 20.52}, {10, 27.88}, {16, 37.70}, {32, 61.10}}
	r := rand.New(rand.NewPCG(5, 6))
	const keys = 10000
	for _, c := range critical {
		n, crit := c.n, c.crit
		for _, gen := range []struct {
			kind string
			key  func(i int) []byte
		}{
			{"random bytes", func(int) []byte {
				k := make([]byte, 1+r.IntN(32))
				for j := range k {
					k[j] = byte(r.Uint32())
				}
				return k
			}},
			{"user-<i>", func(i int) []byte { return []byte("user-" + strconv.Itoa(i)) }},
		} {
			kind, key := gen.kind, gen.key
			counts := make([]int, n)
			seen := make(map[string]bool, keys)
			for i := 0; len(seen) < keys; i++ {
				k := key(i)
				if !seen[string(k)] {
					seen[string(k)] = true
					counts[KeyPartition(k, n)]++
				}
			}
			exp := float64(keys) / float64(n)
			chi2 := 0.0
			for _, c := range counts {
				d := float64(c) - exp
				chi2 += d * d / exp
			}
			if chi2 > crit {
				t.Errorf("%s, n=%d: chi-squared %.1f > %.1f; counts %v", kind, n, chi2, crit, counts)
			}
		}
	}
}

func TestStickyPartitionerKeyed(t *testing.T) {
	p := NewStickyPartitioner(nil)
	for _, key := range [][]byte{[]byte("21"), []byte("foobar"), {}} {
		if got, want := p.Partition("t", key, 12), KeyPartition(key, 12); got != want {
			t.Errorf("Partition(%q) = %d, want KeyPartition's %d", key, got, want)
		}
	}
	// An empty key is a key: murmur2 of no bytes, not the sticky partition.
	want := KeyPartition([]byte{}, 1000)
	q := NewStickyPartitioner(func(n int) int { return (want + 1) % n })
	if got := q.Partition("t", []byte{}, 1000); got != want {
		t.Errorf("empty key went to %d, want %d", got, want)
	}
	if got := q.Partition("t", nil, 1000); got != (want+1)%1000 {
		t.Errorf("nil key went to %d, want the sticky %d", got, (want+1)%1000)
	}
	if got := p.Partition("t", nil, 0); got != -1 {
		t.Errorf("Partition with 0 partitions = %d, want -1", got)
	}
}

// scripted returns an intN that returns the given values in turn and records its n.
func scripted(t *testing.T, vals ...int) (intN func(int) int, ns *[]int) {
	ns = new([]int)
	return func(n int) int {
		*ns = append(*ns, n)
		if len(vals) == 0 {
			t.Fatalf("intN(%d) called more often than scripted", n)
		}
		v := vals[0]
		vals = vals[1:]
		return v
	}, ns
}

func TestStickyPartitionerSticks(t *testing.T) {
	intN, ns := scripted(t, 2, 2, 0, 3)
	p := NewStickyPartitioner(intN)
	// The first keyless record picks uniformly among all partitions: 2.
	for i := 0; i < 100; i++ {
		if got := p.Partition("t", nil, 5); got != 2 {
			t.Fatalf("record %d went to %d, want sticky 2", i, got)
		}
	}
	// A stale OnNewBatch (not the sticky partition) and one for another topic change nothing.
	p.OnNewBatch("t", 3)
	p.OnNewBatch("other", 2)
	if got := p.Partition("t", nil, 5); got != 2 {
		t.Fatalf("after a stale OnNewBatch: %d, want 2", got)
	}
	// Batch for 2 completed: pick among the 4 others. intN(4) = 2 skips over 2: partition 3.
	p.OnNewBatch("t", 2)
	if got := p.Partition("t", nil, 5); got != 3 {
		t.Fatalf("after OnNewBatch(2): %d, want 3", got)
	}
	p.OnNewBatch("t", 3) // then intN(4) = 0: partition 0
	p.OnNewBatch("t", 3) // a repeated call (two batches done together) moves once
	if got := p.Partition("t", nil, 5); got != 0 {
		t.Fatalf("after OnNewBatch(3): %d, want 0", got)
	}
	// The partition count shrinks below the sticky partition... it stays, as 0 < 3.
	if got := p.Partition("t", nil, 3); got != 0 {
		t.Fatalf("with 3 partitions: %d, want 0", got)
	}
	// Another topic has its own sticky partition: intN(5) = 3.
	if got := p.Partition("other", nil, 5); got != 3 {
		t.Fatalf("other topic: %d, want 3", got)
	}
	if want := []int{5, 4, 4, 5}; !slices.Equal(*ns, want) {
		t.Errorf("intN called with %v, want %v", *ns, want)
	}
}

func TestStickyPartitionerShrink(t *testing.T) {
	intN, _ := scripted(t, 9, 1)
	p := NewStickyPartitioner(intN)
	if got := p.Partition("t", nil, 10); got != 9 {
		t.Fatalf("got %d, want 9", got)
	}
	// The topic now has fewer partitions than the sticky one: pick again, in range.
	if got := p.Partition("t", nil, 4); got != 1 {
		t.Fatalf("after shrinking: %d, want 1", got)
	}
}

func TestStickyPartitionerOnePartition(t *testing.T) {
	intN, _ := scripted(t) // never called: with one partition there is no choice
	p := NewStickyPartitioner(intN)
	for i := 0; i < 10; i++ {
		if got := p.Partition("t", nil, 1); got != 0 {
			t.Fatalf("got %d, want 0", got)
		}
		p.OnNewBatch("t", 0)
	}
}

// With real randomness: a completed batch always moves to another partition, every other
// partition is reached, and over many batches the choice is roughly uniform.
func TestStickyPartitionerRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	p := NewStickyPartitioner(r.IntN)
	const n, batches = 8, 16000
	counts := make([]int, n)
	prev := p.Partition("t", nil, n)
	for i := 0; i < batches; i++ {
		p.OnNewBatch("t", prev)
		next := p.Partition("t", nil, n)
		if next == prev || next < 0 || next >= n {
			t.Fatalf("batch %d: moved from %d to %d", i, prev, next)
		}
		counts[next]++
		prev = next
	}
	for i, c := range counts {
		if c < batches/n*8/10 || c > batches/n*12/10 {
			t.Errorf("partition %d chosen %d times of %d: %v", i, c, batches, counts)
		}
	}
	// Two partitions alternate.
	prev = p.Partition("two", nil, 2)
	for i := 0; i < 10; i++ {
		p.OnNewBatch("two", prev)
		next := p.Partition("two", nil, 2)
		if next != 1-prev {
			t.Fatalf("two partitions: %d after %d", next, prev)
		}
		prev = next
	}
}

// Safe for concurrent use (run with -race), and every answer in range.
func TestStickyPartitionerConcurrent(t *testing.T) {
	var p Partitioner = NewStickyPartitioner(nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topics := []string{"a", "b", "c"}
			for i := 0; i < 2000; i++ {
				topic := topics[i%len(topics)]
				var key []byte
				if i%3 == 0 {
					key = []byte{byte(i), byte(g)}
				}
				part := p.Partition(topic, key, 6)
				if part < 0 || part >= 6 {
					t.Errorf("partition %d out of range", part)
					return
				}
				if i%10 == 0 {
					p.OnNewBatch(topic, part)
				}
			}
		}()
	}
	wg.Wait()
}

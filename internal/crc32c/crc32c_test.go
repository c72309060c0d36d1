package crc32c

import (
	"fmt"
	"hash/crc32"
	"math/bits"
	"math/rand/v2"
	"testing"
)

func reference(crc uint32, p []byte) uint32 { return crc32.Update(crc, table, p) }

// TestUpdateMatchesHashCRC32 compares every length up to 3 KiB (every path through the fold: the
// 256-byte loop, the 64- and 16-byte ones, tails), at every alignment mod 64, with random initial
// CRCs, against hash/crc32.
func TestUpdateMatchesHashCRC32(t *testing.T) {
	if !canFold {
		t.Log("this CPU lacks AVX-512 VPCLMULQDQ: Update is hash/crc32 itself, compared anyway")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3<<10+64)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for n := 0; n <= 3<<10; n++ {
		align := n % 64
		p := buf[align : align+n]
		crc := rng.Uint32()
		if got, want := Update(crc, p), reference(crc, p); got != want {
			t.Fatalf("len %d align %d crc %#x: Update %#x, hash/crc32 %#x", n, align, crc, got, want)
		}
		if got, want := Checksum(p), reference(0, p); got != want {
			t.Fatalf("len %d align %d: Checksum %#x, hash/crc32 %#x", n, align, got, want)
		}
	}
}

// TestUpdateLargeAndSpecial covers a large record batch's size and inputs whose bits are all set
// or all clear (each partial product at its extreme).
func TestUpdateLargeAndSpecial(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{100 << 10, 1<<20 + 13, 4 << 20} {
		p := make([]byte, n)
		for _, fill := range []string{"random", "zeros", "ones"} {
			for i := range p {
				switch fill {
				case "random":
					p[i] = byte(rng.Uint32())
				case "zeros":
					p[i] = 0
				case "ones":
					p[i] = 0xff
				}
			}
			for _, crc := range []uint32{0, ^uint32(0), rng.Uint32()} {
				if got, want := Update(crc, p), reference(crc, p); got != want {
					t.Fatalf("%d %s bytes, crc %#x: Update %#x, hash/crc32 %#x", n, fill, crc, got, want)
				}
			}
		}
	}
}

// TestUpdateSplits checks that checksumming in pieces equals one pass, wherever the cut falls.
func TestUpdateSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	p := make([]byte, 5000)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	want := reference(0, p)
	for i := 0; i < 200; i++ {
		a, b := rng.IntN(len(p)+1), rng.IntN(len(p)+1)
		if a > b {
			a, b = b, a
		}
		got := Update(Update(Update(0, p[:a]), p[a:b]), p[b:])
		if got != want {
			t.Fatalf("cuts at %d and %d: %#x, want %#x", a, b, got, want)
		}
	}
}

// TestFoldConstants derives crc32c_amd64.s's constants: for a fold across D bits,
// reflect32(x^(D+32) mod P) << 1 and reflect32(x^(D-32) mod P) << 1. The same derivation gives
// hash/crc32's IEEE constants (0x154442bd4, 0x1c6e41596 for D = 512), which checks it.
func TestFoldConstants(t *testing.T) {
	xpow := func(e int, poly uint32) uint32 { // x^e mod P, normal bit order
		v := uint64(1)
		for range e {
			v <<= 1
			if v&(1<<32) != 0 {
				v ^= 1<<32 | uint64(poly)
			}
		}
		return uint32(v)
	}
	k := func(e int, poly uint32) uint64 { return uint64(bits.Reverse32(xpow(e, poly))) << 1 }
	const ieee, castagnoli = 0x04C11DB7, 0x1EDC6F41
	for _, c := range []struct {
		name   string
		poly   uint32
		d      int
		lo, hi uint64
	}{
		{"ieee/512 (hash/crc32)", ieee, 512, 0x154442bd4, 0x1c6e41596},
		{"castagnoli/2048", castagnoli, 2048, 0xdcb17aa4, 0xb9e02b86},
		{"castagnoli/512", castagnoli, 512, 0x740eef02, 0x9e4addf8},
		{"castagnoli/128", castagnoli, 128, 0xf20c0dfe, 0x14cd00bd6},
	} {
		if lo, hi := k(c.d+32, c.poly), k(c.d-32, c.poly); lo != c.lo || hi != c.hi {
			t.Errorf("%s: derived %#x, %#x; table has %#x, %#x", c.name, lo, hi, c.lo, c.hi)
		}
	}
}

func FuzzUpdate(f *testing.F) {
	f.Add(uint32(0), []byte("123456789"), 0)
	f.Add(uint32(0xdeadbeef), make([]byte, 700), 3)
	f.Fuzz(func(t *testing.T, crc uint32, p []byte, cut int) {
		if got, want := Update(crc, p), reference(crc, p); got != want {
			t.Fatalf("Update %#x, hash/crc32 %#x", got, want)
		}
		if len(p) > 0 {
			cut = int(uint(cut) % uint(len(p)))
			if got, want := Update(Update(crc, p[:cut]), p[cut:]), reference(crc, p); got != want {
				t.Fatalf("split at %d: %#x, want %#x", cut, got, want)
			}
		}
	})
}

func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{64, 256, 512, 1 << 10, 4 << 10, 100 << 10} {
		p := make([]byte, n)
		b.Run(sizeName(n)+"/crc32c", func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Update(0, p)
			}
		})
		b.Run(sizeName(n)+"/hash-crc32", func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				reference(0, p)
			}
		})
	}
}

func sizeName(n int) string {
	if n%(1<<10) == 0 {
		return fmt.Sprintf("size=%dKiB", n>>10)
	}
	return fmt.Sprintf("size=%dB", n)
}

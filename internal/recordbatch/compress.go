package recordbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// DefaultMaxDecompressed bounds the decompressed size of one batch's
// records for Records and ForEachRecord (see Decoder to change it), so that
// a small compressed batch (a "zip bomb") cannot exhaust memory.
const DefaultMaxDecompressed = 64 << 20

// Kafka framing of compressed payloads, which is the records region (what
// follows the 61 byte header) compressed as one stream:
//
//   - gzip: a gzip stream (RFC 1952), possibly several members.
//   - snappy: either one raw snappy block (librdkafka, franz-go before
//     v1.20) or the xerial framing of Java's SnappyOutputStream: the 8 byte
//     magic 0x82 "SNAPPY" 0x00, a 4 byte version and a 4 byte minimum
//     compatible version (both 1), then blocks of a 4 byte big-endian length
//     and a raw snappy block. Both are accepted; the Builder writes xerial
//     with 32 KiB blocks, which every Kafka client reads.
//   - lz4: the LZ4 frame format (not the raw block format). The Builder
//     writes 64 KiB independent blocks, like Kafka's Java producer.
//   - zstd: one or more zstd frames.

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// xerialHeader is the magic followed by version 1 and compatible version 1.
var xerialHeader = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1}

const xerialBlockSize = 32 << 10

// errDecompressedTooLarge is the codec-level overflow error, converted to
// ErrTooLarge by decompress.
var errDecompressedTooLarge = errors.New("decompressed size exceeds limit")

// decompress appends the decompression of src with codec c to dst[:0] and
// returns it, refusing output beyond max bytes.
func decompress(dst []byte, c Compression, src []byte, max int) ([]byte, error) {
	var out []byte
	var err error
	switch c {
	case CompressionGzip:
		out, err = gunzip(dst[:0], src, max)
	case CompressionSnappy:
		out, err = unsnappy(dst[:0], src, max)
	case CompressionLZ4:
		out, err = unlz4(dst[:0], src, max)
	case CompressionZstd:
		out, err = unzstd(dst[:0], src, max)
	default:
		return nil, newErr(ErrBadCompression, "unknown codec %d", int64(c))
	}
	if errors.Is(err, errDecompressedTooLarge) || errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return nil, causeErr(ErrTooLarge, err, "%d byte payload of codec %d decompresses beyond max %d", int64(len(src)), int64(c), int64(max))
	}
	if err != nil {
		return nil, causeErr(ErrBadCompression, err, "%d byte payload of codec %d", int64(len(src)), int64(c))
	}
	return out, nil
}

// readBounded appends everything r yields to dst, failing once more than
// max bytes have been produced. Growth is capped at max+1 bytes.
func readBounded(dst []byte, r io.Reader, limit int, sizeHint int) ([]byte, error) {
	if cap(dst) == 0 {
		dst = make([]byte, 0, min(sizeHint, limit+1))
	}
	for {
		if len(dst) == cap(dst) {
			if len(dst) > limit {
				return nil, errDecompressedTooLarge
			}
			grow := min(max(len(dst), 4096), limit+1-len(dst))
			dst = slices.Grow(dst, grow)
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return nil, errDecompressedTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

type gzipDecoder struct {
	zr  gzip.Reader
	src bytes.Reader
}

var gzipDecoders = sync.Pool{New: func() any { return new(gzipDecoder) }}

func gunzip(dst, src []byte, max int) ([]byte, error) {
	d := gzipDecoders.Get().(*gzipDecoder)
	defer func() {
		d.src.Reset(nil) // drop the reference to src before pooling
		gzipDecoders.Put(d)
	}()
	d.src.Reset(src)
	if err := d.zr.Reset(&d.src); err != nil {
		return nil, err
	}
	return readBounded(dst, &d.zr, max, 4*len(src))
}

type lz4Decoder struct {
	zr  *lz4.Reader
	src bytes.Reader
}

var lz4Decoders = sync.Pool{New: func() any { return &lz4Decoder{zr: lz4.NewReader(nil)} }}

func unlz4(dst, src []byte, max int) ([]byte, error) {
	d := lz4Decoders.Get().(*lz4Decoder)
	defer func() {
		d.zr.Reset(nil)
		d.src.Reset(nil)
		lz4Decoders.Put(d)
	}()
	d.src.Reset(src)
	d.zr.Reset(&d.src)
	return readBounded(dst, d.zr, max, 4*len(src))
}

func unsnappy(dst, src []byte, max int) ([]byte, error) {
	if len(src) >= len(xerialHeader) && bytes.HasPrefix(src, xerialMagic) {
		return unxerial(dst, src[len(xerialHeader):], max)
	}
	// The decoded length leads a raw block; check it before s2 allocates.
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, errDecompressedTooLarge
	}
	dst = slices.Grow(dst, n)
	return s2.Decode(dst[:n], src)
}

// unxerial decodes xerial blocks (after the 16 byte header). It first walks
// the block lengths, summing the claimed decoded sizes against max, so the
// output is allocated once.
func unxerial(dst, src []byte, max int) ([]byte, error) {
	total := 0
	for rem := src; len(rem) > 0; {
		if len(rem) < 4 {
			return nil, errors.New("xerial: truncated block length")
		}
		size := binary.BigEndian.Uint32(rem)
		rem = rem[4:]
		if uint64(size) > uint64(len(rem)) {
			return nil, errors.New("xerial: block runs past the end")
		}
		n, err := s2.DecodedLen(rem[:size])
		if err != nil {
			return nil, err
		}
		if n > max-total {
			return nil, errDecompressedTooLarge
		}
		total += n
		rem = rem[size:]
	}
	dst = slices.Grow(dst, total)
	for len(src) > 0 {
		size := int(binary.BigEndian.Uint32(src))
		block := src[4 : 4+size]
		src = src[4+size:]
		n, _ := s2.DecodedLen(block)
		if _, err := s2.Decode(dst[len(dst):len(dst)+n], block); err != nil {
			return nil, err
		}
		dst = dst[:len(dst)+n]
	}
	return dst, nil
}

// zstd decoders are pooled per output bound, which they enforce themselves
// (WithDecoderMaxMemory) before allocating for a frame that declares its
// size and while decoding one that does not.
var zstdPools sync.Map // int -> *sync.Pool of *zstd.Decoder

func zstdPool(max int) *sync.Pool {
	if p, ok := zstdPools.Load(max); ok {
		return p.(*sync.Pool)
	}
	p, _ := zstdPools.LoadOrStore(max, &sync.Pool{New: func() any {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(uint64(max)),
		)
		if err != nil {
			panic("recordbatch: zstd.NewReader: " + err.Error()) // options are static
		}
		return d
	}})
	return p.(*sync.Pool)
}

func unzstd(dst, src []byte, max int) ([]byte, error) {
	if max < 1 {
		max = 1 // the decoder refuses a zero bound; one byte is never a batch anyway
	}
	p := zstdPool(max)
	d := p.Get().(*zstd.Decoder)
	defer p.Put(d)
	out, err := d.DecodeAll(src, dst)
	if err == nil && len(out) > max {
		err = errDecompressedTooLarge
	}
	return out, err
}

// Compression side. Encoders are pooled per codec and level.

type encKey struct {
	c     Compression
	level int
}

var encPools sync.Map // encKey -> *sync.Pool

func encPool(c Compression, level int) *sync.Pool {
	k := encKey{c, level}
	if p, ok := encPools.Load(k); ok {
		return p.(*sync.Pool)
	}
	var newFn func() any
	switch c {
	case CompressionGzip:
		newFn = func() any {
			lvl := gzip.DefaultCompression
			if level != 0 {
				lvl = level
			}
			w, err := gzip.NewWriterLevel(nil, lvl)
			if err != nil {
				w, _ = gzip.NewWriterLevel(nil, gzip.DefaultCompression)
			}
			return w
		}
	case CompressionLZ4:
		newFn = func() any {
			w := lz4.NewWriter(nil)
			_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
			if level != 0 {
				if err := w.Apply(lz4.CompressionLevelOption(lz4.CompressionLevel(level))); err != nil {
					w = lz4.NewWriter(nil)
					_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
				}
			}
			return w
		}
	case CompressionZstd:
		newFn = func() any {
			opts := []zstd.EOption{
				zstd.WithEncoderConcurrency(1),
				zstd.WithWindowSize(1 << 20),
				zstd.WithZeroFrames(true),
			}
			if level != 0 {
				opts = append(opts, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)))
			}
			e, err := zstd.NewWriter(nil, opts...)
			if err != nil {
				panic("recordbatch: zstd.NewWriter: " + err.Error())
			}
			return e
		}
	default:
		return nil
	}
	p, _ := encPools.LoadOrStore(k, &sync.Pool{New: newFn})
	return p.(*sync.Pool)
}

// sliceWriter is an io.Writer appending to a slice.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// compress appends the compression of src with codec c to dst.
func compress(dst []byte, c Compression, level int, src []byte) ([]byte, error) {
	switch c {
	case CompressionSnappy:
		dst = append(dst, xerialHeader...)
		for len(src) > 0 {
			n := min(len(src), xerialBlockSize)
			dst = slices.Grow(dst, 4+s2.MaxEncodedLen(n))
			at := len(dst)
			block := s2.EncodeSnappy(dst[at+4:cap(dst)], src[:n])
			binary.BigEndian.PutUint32(dst[at:at+4], uint32(len(block)))
			dst = dst[:at+4+len(block)]
			src = src[n:]
		}
		return dst, nil
	case CompressionZstd:
		p := encPool(c, level)
		e := p.Get().(*zstd.Encoder)
		defer p.Put(e)
		return e.EncodeAll(src, dst), nil
	case CompressionGzip:
		p := encPool(c, level)
		w := p.Get().(*gzip.Writer)
		defer p.Put(w)
		sw := sliceWriter{dst}
		w.Reset(&sw)
		if _, err := w.Write(src); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		w.Reset(io.Discard)
		return sw.b, nil
	case CompressionLZ4:
		p := encPool(c, level)
		w := p.Get().(*lz4.Writer)
		defer p.Put(w)
		sw := sliceWriter{dst}
		w.Reset(&sw)
		if _, err := w.Write(src); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		w.Reset(nil)
		return sw.b, nil
	case CompressionNone:
		return append(dst, src...), nil
	}
	return nil, errors.New("recordbatch: unknown compression codec " + c.String())
}

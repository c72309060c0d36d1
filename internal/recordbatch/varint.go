package recordbatch

// Kafka's varint (int32) and varlong (int64) are protobuf sint32/sint64:
// zigzag, then base-128 little-endian groups with a continuation bit. A
// varint takes at most 5 bytes and a varlong at most 10; longer encodings,
// and encodings whose last byte carries bits beyond the type's width, are
// rejected. Non-minimal encodings (0x80 0x00 for 0) are accepted, as Kafka
// does.

// uvarint32 decodes the base-128 groups of a varint at b[q:] (at most 5
// bytes, no bits beyond 32), returning the raw (still zigzagged) value and
// the position after it, or q' < 0 if truncated or overlong. It is small
// enough for the compiler to inline, which keeps the record walk free of
// calls; unzz32 undoes the zigzag.
func uvarint32(b []byte, q int) (uint32, int) {
	var x uint32
	for s := uint(0); s < 35; s += 7 {
		if uint(q) >= uint(len(b)) {
			return 0, -1
		}
		c := b[q]
		q++
		x |= uint32(c&0x7f) << s
		if c < 0x80 {
			if s == 28 && c > 0x0f {
				return 0, -1 // bits beyond 32
			}
			return x, q
		}
	}
	return 0, -1 // a fifth byte with the continuation bit
}

// uvarint64 is uvarint32 for varlongs (at most 10 bytes, 64 bits).
func uvarint64(b []byte, q int) (uint64, int) {
	var x uint64
	for s := uint(0); s < 70; s += 7 {
		if uint(q) >= uint(len(b)) {
			return 0, -1
		}
		c := b[q]
		q++
		x |= uint64(c&0x7f) << s
		if c < 0x80 {
			if s == 63 && c > 1 {
				return 0, -1 // bits beyond 64
			}
			return x, q
		}
	}
	return 0, -1
}

// zz decodes a one byte varint (c < 0x80) and zz2 a two byte one (c0 >=
// 0x80, c1 < 0x80). The record walk tests for these common forms itself
// and calls them, falling back to the inlined loops above, because a
// function holding both the fast path and a fallback is too large for the
// compiler to inline.
func zz(c byte) int32 { return int32(c>>1) ^ -int32(c&1) }

func zz2(c0, c1 byte) int32 {
	x := uint32(c0&0x7f) | uint32(c1)<<7
	return int32(x>>1) ^ -int32(x&1)
}

// unzz32 and unzz64 undo the zigzag encoding.
func unzz32(x uint32) int32 { return int32(x>>1) ^ -int32(x&1) }
func unzz64(x uint64) int64 { return int64(x>>1) ^ -int64(x&1) }

// readVarint decodes a varint at b[p:], returning the value and the
// position after it, or p' < 0 if it is truncated or overlong.
func readVarint(b []byte, p int) (int32, int) {
	x, p := uvarint32(b, p)
	return unzz32(x), p
}

// readVarlong decodes a varlong at b[p:] like readVarint.
func readVarlong(b []byte, p int) (int64, int) {
	x, p := uvarint64(b, p)
	return unzz64(x), p
}

// appendVarint appends v as a zigzag varint.
func appendVarint(b []byte, v int32) []byte {
	u := uint32(v<<1) ^ uint32(v>>31)
	for u >= 0x80 {
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

// appendVarlong appends v as a zigzag varlong.
func appendVarlong(b []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for u >= 0x80 {
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

// sizeVarint is the encoded size of v as a zigzag varint.
func sizeVarint(v int32) int {
	return sizeUvarint(uint64(uint32(v<<1) ^ uint32(v>>31)))
}

// sizeVarlong is the encoded size of v as a zigzag varlong.
func sizeVarlong(v int64) int {
	return sizeUvarint(uint64(v<<1) ^ uint64(v>>63))
}

func sizeUvarint(u uint64) int {
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

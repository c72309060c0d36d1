package recordbatch

// rawRecord locates the fields of one record inside a records region. It
// holds positions, not slices, so that parsing one costs no allocation.
type rawRecord struct {
	attrs      int8
	tsDelta    int64
	offDelta   int32
	keyOff     int
	keyLen     int // -1: null
	valOff     int
	valLen     int // -1: null
	hdrOff     int // first header, just after the headers count
	numHeaders int
	end        int // first byte after the record
}

// readRecord parses the record starting at b[p:], checking its framing:
// every varint is well formed, the record length fits in b and is
// consumed exactly, key and value lengths are -1 or fit, the headers
// count is >= 0 and each header key length is >= 0 and value length >= -1
// and fits. i is the record's index, for errors.
func readRecord(b []byte, p, i int, r *rawRecord) error {
	// One and two byte varints (nearly all of them) are decoded inline,
	// longer ones by the inlined loops of uvarint32/64: the walk makes no
	// calls but to build an error.
	var x uint32
	var x64 uint64
	q := p
	var length int32
	if uint(q) < uint(len(b)) && b[q] < 0x80 {
		length = zz(b[q])
		q++
	} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
		length = zz2(b[q], b[q+1])
		q += 2
	} else {
		if x, q = uvarint32(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad length varint at byte %d", int64(p))
		}
		length = unzz32(x)
	}
	if length < MinRecordSize-1 || int64(length) > int64(len(b)-q) {
		return recErr(ErrMalformedRecord, i, "length %d at byte %d, %d bytes left", int64(length), int64(p), int64(len(b)-q))
	}
	end := q + int(length)
	b = b[:end] // nothing below may read past the record
	r.end = end
	r.attrs = int8(b[q])
	q++

	if uint(q) < uint(len(b)) && b[q] < 0x80 {
		r.tsDelta = int64(zz(b[q]))
		q++
	} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
		r.tsDelta = int64(zz2(b[q], b[q+1]))
		q += 2
	} else {
		if x64, q = uvarint64(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad timestampDelta varlong")
		}
		r.tsDelta = unzz64(x64)
	}
	if uint(q) < uint(len(b)) && b[q] < 0x80 {
		r.offDelta = zz(b[q])
		q++
	} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
		r.offDelta = zz2(b[q], b[q+1])
		q += 2
	} else {
		if x, q = uvarint32(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad offsetDelta varint")
		}
		r.offDelta = unzz32(x)
	}

	var kl int32
	if uint(q) < uint(len(b)) && b[q] < 0x80 {
		kl = zz(b[q])
		q++
	} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
		kl = zz2(b[q], b[q+1])
		q += 2
	} else {
		if x, q = uvarint32(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad keyLength varint")
		}
		kl = unzz32(x)
	}
	if kl < -1 || int(kl) > end-q {
		return recErr(ErrMalformedRecord, i, "keyLength %d, %d bytes left in record", int64(kl), int64(end-q))
	}
	r.keyOff, r.keyLen = q, int(kl)
	if kl > 0 {
		q += int(kl)
	}

	var vl int32
	if uint(q) < uint(len(b)) && b[q] < 0x80 {
		vl = zz(b[q])
		q++
	} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
		vl = zz2(b[q], b[q+1])
		q += 2
	} else {
		if x, q = uvarint32(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad valueLength varint")
		}
		vl = unzz32(x)
	}
	if vl < -1 || int(vl) > end-q {
		return recErr(ErrMalformedRecord, i, "valueLength %d, %d bytes left in record", int64(vl), int64(end-q))
	}
	r.valOff, r.valLen = q, int(vl)
	if vl > 0 {
		q += int(vl)
	}

	var nh int32
	if uint(q) < uint(len(b)) && b[q] < 0x80 {
		nh = zz(b[q])
		q++
	} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
		nh = zz2(b[q], b[q+1])
		q += 2
	} else {
		if x, q = uvarint32(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad headers count varint")
		}
		nh = unzz32(x)
	}
	// Each header takes at least two bytes (two length varints).
	if nh < 0 || int(nh) > (end-q)/2 {
		return recErr(ErrMalformedRecord, i, "headers count %d, %d bytes left in record", int64(nh), int64(end-q))
	}
	r.hdrOff, r.numHeaders = q, int(nh)
	if nh > 0 {
		var err error
		if q, err = checkHeaders(b, q, int(nh), i); err != nil {
			return err
		}
	}
	if q != end {
		return recErr(ErrMalformedRecord, i, "length %d but fields end %d bytes early", int64(length), int64(end-q))
	}
	return nil
}

// validateRecords walks the count records of an uncompressed batch b
// (records start at HeaderSize) with the checks of readRecord plus
// offsetDelta == index, without recording where the fields are. It is
// readRecord specialized for the broker's append path (about 25% fewer
// instructions): the timestampDelta is skipped rather than decoded, and
// nothing is stored. The decoders use readRecord; the tests and fuzz
// targets check that the two accept the same records.
func validateRecords(b []byte, count int) error {
	var x uint32
	p := HeaderSize
	all := b
	for i := 0; i < count; i++ {
		b = all
		if p == len(b) {
			return newErr(ErrBadRecordCount, "records count %d, batch ends after %d records", int64(count), int64(i))
		}
		q := p
		var length int32
		if uint(q) < uint(len(b)) && b[q] < 0x80 {
			length = zz(b[q])
			q++
		} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
			length = zz2(b[q], b[q+1])
			q += 2
		} else {
			if x, q = uvarint32(b, q); q < 0 {
				return recErr(ErrMalformedRecord, i, "bad length varint at byte %d", int64(p))
			}
			length = unzz32(x)
		}
		if length < MinRecordSize-1 || int64(length) > int64(len(b)-q) {
			return recErr(ErrMalformedRecord, i, "length %d at byte %d, %d bytes left", int64(length), int64(p), int64(len(b)-q))
		}
		end := q + int(length)
		b = b[:end]
		q++ // attributes

		// timestampDelta: skip.
		if uint(q) < uint(len(b)) && b[q] < 0x80 {
			q++
		} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
			q += 2
		} else if _, q = uvarint64(b, q); q < 0 {
			return recErr(ErrMalformedRecord, i, "bad timestampDelta varlong")
		}

		var offDelta int32
		if uint(q) < uint(len(b)) && b[q] < 0x80 {
			offDelta = zz(b[q])
			q++
		} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
			offDelta = zz2(b[q], b[q+1])
			q += 2
		} else {
			if x, q = uvarint32(b, q); q < 0 {
				return recErr(ErrMalformedRecord, i, "bad offsetDelta varint")
			}
			offDelta = unzz32(x)
		}
		if offDelta != int32(i) {
			return recErr(ErrBadOffsetDelta, i, "offsetDelta %d, want %d", int64(offDelta), int64(i))
		}

		var kl int32
		if uint(q) < uint(len(b)) && b[q] < 0x80 {
			kl = zz(b[q])
			q++
		} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
			kl = zz2(b[q], b[q+1])
			q += 2
		} else {
			if x, q = uvarint32(b, q); q < 0 {
				return recErr(ErrMalformedRecord, i, "bad keyLength varint")
			}
			kl = unzz32(x)
		}
		if kl < -1 || int(kl) > end-q {
			return recErr(ErrMalformedRecord, i, "keyLength %d, %d bytes left in record", int64(kl), int64(end-q))
		}
		if kl > 0 {
			q += int(kl)
		}

		var vl int32
		if uint(q) < uint(len(b)) && b[q] < 0x80 {
			vl = zz(b[q])
			q++
		} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
			vl = zz2(b[q], b[q+1])
			q += 2
		} else {
			if x, q = uvarint32(b, q); q < 0 {
				return recErr(ErrMalformedRecord, i, "bad valueLength varint")
			}
			vl = unzz32(x)
		}
		if vl < -1 || int(vl) > end-q {
			return recErr(ErrMalformedRecord, i, "valueLength %d, %d bytes left in record", int64(vl), int64(end-q))
		}
		if vl > 0 {
			q += int(vl)
		}

		var nh int32
		if uint(q) < uint(len(b)) && b[q] < 0x80 {
			nh = zz(b[q])
			q++
		} else if uint(q+1) < uint(len(b)) && b[q+1] < 0x80 {
			nh = zz2(b[q], b[q+1])
			q += 2
		} else {
			if x, q = uvarint32(b, q); q < 0 {
				return recErr(ErrMalformedRecord, i, "bad headers count varint")
			}
			nh = unzz32(x)
		}
		if nh != 0 {
			if nh < 0 || int(nh) > (end-q)/2 {
				return recErr(ErrMalformedRecord, i, "headers count %d, %d bytes left in record", int64(nh), int64(end-q))
			}
			var err error
			if q, err = checkHeaders(b, q, int(nh), i); err != nil {
				return err
			}
		}
		if q != end {
			return recErr(ErrMalformedRecord, i, "length %d but fields end %d bytes early", int64(length), int64(end-q))
		}
		p = end
	}
	if p != len(all) {
		return newErr(ErrBadRecordCount, "records count %d, but %d bytes follow the last record", int64(count), int64(len(all)-p))
	}
	return nil
}

// checkHeaders checks the n headers starting at b[q:] (b ends with the
// record) and returns the position after them.
func checkHeaders(b []byte, q, n, i int) (int, error) {
	end := len(b)
	for h := 0; h < n; h++ {
		x, q2 := uvarint32(b, q)
		if q = q2; q < 0 {
			return 0, recErr(ErrMalformedRecord, i, "header %d: bad key length varint", int64(h))
		}
		l := unzz32(x)
		if l < 0 || int(l) > end-q {
			return 0, recErr(ErrMalformedRecord, i, "header %d: key length %d, %d bytes left in record", int64(h), int64(l), int64(end-q))
		}
		q += int(l)
		if x, q = uvarint32(b, q); q < 0 {
			return 0, recErr(ErrMalformedRecord, i, "header %d: bad value length varint", int64(h))
		}
		if l = unzz32(x); l < -1 || int(l) > end-q {
			return 0, recErr(ErrMalformedRecord, i, "header %d: value length %d, %d bytes left in record", int64(h), int64(l), int64(end-q))
		}
		if l > 0 {
			q += int(l)
		}
	}
	return q, nil
}

// checkBatch runs the checks shared by Validate and the decoders: b is
// exactly one batch (length field == len(b)-12, at most max bytes), magic
// 2, CRC32C matches, and the codec is defined.
func checkBatch(b []byte, max int) (Header, error) {
	n, err := Size(b, max)
	if err != nil {
		return Header{}, err
	}
	if n > len(b) {
		return Header{}, newErr(ErrTruncated, "batchLength %d says %d bytes, have %d", int64(n-LogOverhead), int64(n), int64(len(b)))
	}
	if n < len(b) {
		return Header{}, newErr(ErrBadLength, "batchLength %d says %d bytes, have %d (trailing data)", int64(n-LogOverhead), int64(n), int64(len(b)))
	}
	// n >= HeaderSize, guaranteed by Size.
	if m := int8(b[OffMagic]); m != Magic {
		return Header{}, newErr(ErrBadMagic, "magic %d, want %d", int64(m), Magic)
	}
	h := parseHeader(b)
	if c := ComputeCRC(b); c != h.CRC {
		return Header{}, newErr(ErrBadCRC, "header %#x computed %#x", int64(h.CRC), int64(c))
	}
	if c := h.Compression(); !c.Valid() {
		return Header{}, newErr(ErrBadCompression, "unknown codec %d in attributes %#x", int64(c), int64(uint16(h.Attributes)))
	}
	return h, nil
}

// Validate checks that b is exactly one well-formed RecordBatch v2 of at
// most max bytes, as the broker must before appending a producer's batch,
// and returns its header. It allocates nothing unless it fails. It checks,
// in order:
//
//   - the length field: at least 12 bytes (ErrTruncated), batchLength
//     >= 49 (ErrBadLength), batchLength+12 <= max (ErrTooLarge), and
//     batchLength == len(b)-12 (ErrTruncated if less data, ErrBadLength if
//     more);
//   - magic == 2 (ErrBadMagic);
//   - the CRC32C of b[21:] (ErrBadCRC);
//   - the codec is 0-4 (ErrBadCompression);
//   - records count >= 1 and lastOffsetDelta == count-1
//     (ErrBadRecordCount, ErrBadOffsetDelta);
//   - for uncompressed batches, every record: its framing (see
//     ErrMalformedRecord), offsetDelta == its index (ErrBadOffsetDelta),
//     and that exactly count records fill the batch to its last byte
//     (ErrBadRecordCount).
//
// Compressed batches are checked up to the count: their payload is passed
// through as the producer wrote it, protected by the CRC only, and is
// only decompressed by consumers (see Records).
//
// Not checked: maxTimestamp against the record timestamps (Kafka's broker
// does not reject a wrong maxTimestamp either, it overwrites it; see
// SetMaxTimestamp), producer id/epoch/sequence consistency, unknown
// attribute bits, record attributes, and whether a control batch comes
// from a client. baseOffset and partitionLeaderEpoch lie outside the CRC
// and may hold anything.
func Validate(b []byte, max int) (Header, error) {
	h, err := checkBatch(b, max)
	if err != nil {
		return Header{}, err
	}
	count := h.NumRecords
	if count < 1 {
		return Header{}, newErr(ErrBadRecordCount, "records count %d, want >= 1", int64(count))
	}
	if h.LastOffsetDelta != count-1 {
		return Header{}, newErr(ErrBadOffsetDelta, "lastOffsetDelta %d with records count %d, want %d", int64(h.LastOffsetDelta), int64(count), int64(count)-1)
	}
	if h.Compression() != CompressionNone {
		return h, nil
	}
	if int64(count) > int64((len(b)-HeaderSize)/MinRecordSize) {
		return Header{}, newErr(ErrBadRecordCount, "records count %d cannot fit in %d bytes", int64(count), int64(len(b)-HeaderSize))
	}
	if err := validateRecords(b, int(count)); err != nil {
		return Header{}, err
	}
	return h, nil
}

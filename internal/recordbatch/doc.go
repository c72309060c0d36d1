// Package recordbatch encodes, validates and decodes Kafka's RecordBatch v2
// (magic 2), the unit of data in produce requests, fetch responses and the
// broker's log.
//
// The broker's commitlog calls Validate on its append path (no allocation
// on success), then SetBaseOffset / SetPartitionLeaderEpoch, which lie
// outside the CRC. The SDK builds batches with a Builder and decodes them
// with Records or ForEachRecord.
//
// # Batch header
//
// All integers are big-endian; the header is HeaderSize (61) bytes.
//
//	 offset  size  field                 notes
//	      0     8  baseOffset            outside the CRC
//	      8     4  batchLength           bytes after this field (= total - 12)
//	     12     4  partitionLeaderEpoch  outside the CRC
//	     16     1  magic                 2
//	     17     4  crc                   CRC32C (Castagnoli) of bytes [21, end)
//	     21     2  attributes            see below
//	     23     4  lastOffsetDelta       = records count - 1 from producers
//	     27     8  baseTimestamp         first record's timestamp (unix ms)
//	     35     8  maxTimestamp          largest record timestamp, or the
//	                                     log append time
//	     43     8  producerId            -1 if not idempotent
//	     51     2  producerEpoch         -1 if not idempotent
//	     53     4  baseSequence          -1 if not idempotent
//	     57     4  records count
//	     61        records...            compressed as one stream if the
//	                                     codec is not none
//
//	0          8          12         16 17         21      23          27
//	+----------+----------+----------+--+----------+-------+-----------+
//	|baseOffset|batchLen  |ldrEpoch  |mg|   crc    | attrs |lastOffDelta|
//	+----------+----------+----------+--+----------+-------+-----------+
//	27              35             43           51     53      57      61
//	+---------------+--------------+------------+------+-------+-------+
//	| baseTimestamp | maxTimestamp | producerId |pEpoch|baseSeq| count |
//	+---------------+--------------+------------+------+-------+-------+
//	61
//	+------------------------------------------------------------------+
//	| records (count of them; one compressed stream if codec != none)  |
//	+------------------------------------------------------------------+
//
//	CRC32C covers byte 21 (attrs) through the end of the batch.
//
// Attributes (int16):
//
//	bit  0-2  compression: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
//	bit    3  timestamp type: 0 CreateTime, 1 LogAppendTime
//	bit    4  transactional
//	bit    5  control batch (transaction markers)
//	bit    6  delete horizon set (log cleaner, KIP-534); passed through
//
// # Record
//
// Varints are zigzag-encoded base-128 like protobuf sint32/sint64 ("varint"
// holds an int32 in at most 5 bytes, "varlong" an int64 in at most 10).
//
//	length          varint   bytes after this field
//	attributes      int8     unused, 0
//	timestampDelta  varlong  timestamp - baseTimestamp
//	offsetDelta     varint   offset - baseOffset (the record's index)
//	keyLength       varint   -1 = null key
//	key             bytes
//	valueLength     varint   -1 = null value
//	value           bytes
//	headers count   varint
//	  headerKeyLength    varint (>= 0: header keys are never null)
//	  headerKey          bytes (UTF-8)
//	  headerValueLength  varint  -1 = null value
//	  headerValue        bytes
//
// # Rules enforced by Validate
//
//   - batchLength == len(b) - 12, at least 49, total at most max;
//   - magic == 2, the CRC32C matches, the codec is 0-4;
//   - records count >= 1 and lastOffsetDelta == count - 1;
//   - uncompressed batches: every record's length fits the batch and is
//     consumed exactly by its fields, offsetDelta == the record's index,
//     key, value and header lengths are in range, and the count-th record
//     ends exactly at the end of the batch.
//
// Compressed batches are validated up to the header: the payload is passed
// through as the producer compressed it and is protected by the CRC only;
// the consumers that decompress it check the records (Records,
// ForEachRecord).
//
// Not enforced, deliberately: that maxTimestamp >= every baseTimestamp +
// timestampDelta. The Java and franz-go producers do write the largest
// record timestamp there, but Kafka's broker does not reject a batch whose
// maxTimestamp is wrong: its LogValidator recomputes the maximum and
// overwrites the field (SetMaxTimestamp does the same here). Rejecting
// would refuse batches Kafka accepts, and LogAppendTime batches carry the
// broker's time there in any case. Control batches are valid. baseOffset
// and partitionLeaderEpoch are outside the CRC and not checked.
//
// # Decoding
//
// Record offsets are baseOffset + offsetDelta and timestamps are
// baseTimestamp + timestampDelta (maxTimestamp for LogAppendTime batches).
// The decoders verify the CRC and every record's framing, but accept what
// a compacted log holds (a count of 0, offsetDelta gaps). Compressed
// payloads are decompressed with a bound (DefaultMaxDecompressed, or
// Decoder.MaxDecompressed): gzip, snappy (raw or the xerial framing that
// Kafka's Java producer writes), lz4 (frame format) and zstd.
//
// # Errors
//
// Every error about the input wraps ErrInvalid and exactly one specific
// sentinel (ErrTruncated, ErrTooLarge, ErrBadLength, ErrBadMagic,
// ErrBadCRC, ErrBadRecordCount, ErrBadOffsetDelta, ErrMalformedRecord,
// ErrBadCompression); its concrete type is *Error and its message names
// the field and values.
package recordbatch

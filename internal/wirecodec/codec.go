// Package wirecodec is the gRPC codec of Runnel's broker and SDK: the standard protobuf
// encoding (content-subtype "proto", so any gRPC client interoperates), with two shortcuts
// for the messages that carry record batches, which are most of the bytes Runnel moves:
//
//   - Marshal of a message whose batches are the bulk of it (FetchResponse, SubscribeResponse,
//     and a ProduceStreamRequest or ProduceRequest with one partition entry) encodes the small
//     fields and hands gRPC the batch bytes as a buffer of their own, without copying them.
//     gRPC keeps a reference until it has written them, so the caller must not modify the
//     batches after sending (the broker and the SDK never do: each batch is a fresh slice).
//   - Unmarshal of a large FetchResponse, SubscribeResponse, ProduceRequest or
//     ProduceStreamRequest copies gRPC's received buffers once into a fresh slice and points
//     the batches into it instead of copying them a second time (unmarshalAliased:
//     protobuf-go's UnmarshalAliasBuffer does not do this for bytes fields). Other large
//     messages are decoded from that slice the standard way, which copies their bytes
//     fields; small messages take the standard path.
//
// Each shortcut saves one copy of every batch byte on a path that is otherwise bound by
// memory copies (produce: client marshal and broker unmarshal; consume: broker marshal and
// client unmarshal).
package wirecodec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/runtime/protoiface"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// Name is the codec's name: the standard one, so the wire format and content-type are
// protobuf's.
const Name = "proto"

// aliasThreshold is the message size from which Unmarshal copies once and aliases, instead of
// decoding from a pooled buffer (which must then copy every bytes field out of it).
const aliasThreshold = 64 << 10

// Codec is the codec; pass it with grpc.ForceServerCodecV2 and grpc.ForceCodecV2.
var Codec encoding.CodecV2 = codec{}

type codec struct{}

func (codec) Name() string { return Name }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("wirecodec: cannot marshal %T: not a proto.Message", v)
	}
	switch m := m.(type) {
	case *runnelv1.SubscribeResponse:
		if len(m.GetBatches()) >= aliasThreshold {
			return marshalTail(m, &m.Batches, 4)
		}
	case *runnelv1.FetchResponse:
		if len(m.GetBatches()) >= aliasThreshold {
			return marshalTail(m, &m.Batches, 4)
		}
	case *runnelv1.ProduceStreamRequest:
		if r := m.GetRequest(); oneBigPartition(r) {
			inner, err := marshalProduceRequest(r)
			if err != nil {
				return nil, err
			}
			head := &runnelv1.ProduceStreamRequest{CorrelationId: m.GetCorrelationId()}
			return wrap(head, 2, inner)
		}
	case *runnelv1.ProduceRequest:
		if oneBigPartition(m) {
			return marshalProduceRequest(m)
		}
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("wirecodec: cannot unmarshal into %T: not a proto.Message", v)
	}
	if data.Len() < aliasThreshold {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	}
	b := data.Materialize() // a fresh slice that nothing else uses: safe to alias
	switch m := m.(type) {
	case *runnelv1.FetchResponse:
		return unmarshalAliased(b, m, 4, &m.Batches)
	case *runnelv1.SubscribeResponse:
		return unmarshalAliased(b, m, 4, &m.Batches)
	case *runnelv1.ProduceRequest:
		return unmarshalProduceRequest(b, m)
	case *runnelv1.ProduceStreamRequest:
		return unmarshalProduceStreamRequest(b, m)
	}
	_, err := proto.UnmarshalOptions{}.UnmarshalState(protoiface.UnmarshalInput{
		Message: m.ProtoReflect(),
		Buf:     b,
		Flags:   protoiface.UnmarshalAliasBuffer,
	})
	return err
}

// oneBigPartition reports a ProduceRequest of the SDK's shape: one batch entry, large.
func oneBigPartition(r *runnelv1.ProduceRequest) bool {
	return r != nil && len(r.GetPartitions()) == 1 && len(r.GetTopics()) == 0 &&
		len(r.GetPartitions()[0].GetBatches()) >= aliasThreshold
}

// marshalProduceRequest encodes a ProduceRequest with one partition entry, its batches not
// copied.
func marshalProduceRequest(r *runnelv1.ProduceRequest) (mem.BufferSlice, error) {
	p := r.GetPartitions()[0]
	entry, err := marshalTail(p, &p.Batches, 3)
	if err != nil {
		return nil, err
	}
	head := runnelv1.ProduceRequest{Acks: r.GetAcks()}
	return wrap(&head, 2, entry)
}

// marshalTail encodes m with the bytes field *field (number num) appended last, referenced,
// not copied. Field order does not matter in the protobuf wire format.
func marshalTail[M proto.Message](m M, field *[]byte, num protowire.Number) (mem.BufferSlice, error) {
	big := *field
	*field = nil
	head, err := proto.Marshal(m)
	*field = big
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, num, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(big)))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(big)}, nil
}

// wrap encodes m followed by field num holding the already encoded message body.
func wrap(m proto.Message, num protowire.Number, body mem.BufferSlice) (mem.BufferSlice, error) {
	head, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, num, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(body.Len()))
	return append(mem.BufferSlice{mem.SliceBuffer(head)}, body...), nil
}

// unmarshalAliased decodes b into m with its top-level bytes field num (*field) pointing into
// b. protobuf-go copies every bytes field even under UnmarshalAliasBuffer (v1.36:
// consumeBytes appends the value to a nil slice; the flag only serves lazy messages), so
// the field is cut out of the encoding, the rest (a few small fields) decoded the standard
// way, and *field set to its bytes in b. As in any decode, the last occurrence of the field
// wins.
func unmarshalAliased(b []byte, m proto.Message, num protowire.Number, field *[]byte) error {
	var (
		big   []byte
		found bool
	)
	rest, err := splitField(b, num, func(v []byte) error {
		big, found = v, true
		return nil
	})
	if err != nil {
		return fmt.Errorf("wirecodec: %T: %w", m, err)
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	if found {
		*field = big
	}
	return nil
}

// unmarshalProduceRequest decodes b into r with every partition entry's batches pointing
// into b (unmarshalAliased, one level down).
func unmarshalProduceRequest(b []byte, r *runnelv1.ProduceRequest) error {
	var parts []*runnelv1.ProducePartition
	rest, err := splitField(b, 2, func(v []byte) error {
		pp := &runnelv1.ProducePartition{}
		if err := unmarshalAliased(v, pp, 3, &pp.Batches); err != nil {
			return err
		}
		parts = append(parts, pp)
		return nil
	})
	if err != nil {
		return fmt.Errorf("wirecodec: %T: %w", r, err)
	}
	if err := proto.Unmarshal(rest, r); err != nil {
		return err
	}
	if parts != nil {
		r.Partitions = parts
	}
	return nil
}

// unmarshalProduceStreamRequest decodes b into m with its request's batches pointing into b.
// A request field that occurs more than once (protobuf merges the occurrences; no Runnel
// client sends that) takes the standard, copying decode.
func unmarshalProduceStreamRequest(b []byte, m *runnelv1.ProduceStreamRequest) error {
	var reqs [][]byte
	rest, err := splitField(b, 2, func(v []byte) error {
		reqs = append(reqs, v)
		return nil
	})
	if err != nil || len(reqs) > 1 {
		return proto.Unmarshal(b, m)
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	if len(reqs) == 1 {
		r := &runnelv1.ProduceRequest{}
		if err := unmarshalProduceRequest(reqs[0], r); err != nil {
			return err
		}
		m.Request = r
	}
	return nil
}

// splitField walks the top-level fields of the encoded message b: the value of every field
// numbered num with the bytes wire type goes to each, in order; the other fields are
// returned, encoded as they were.
func splitField(b []byte, num protowire.Number, each func(v []byte) error) ([]byte, error) {
	var rest []byte
	for p := b; len(p) > 0; {
		n, typ, tagLen := protowire.ConsumeTag(p)
		if tagLen < 0 {
			return nil, protowire.ParseError(tagLen)
		}
		valLen := protowire.ConsumeFieldValue(n, typ, p[tagLen:])
		if valLen < 0 {
			return nil, fmt.Errorf("field %d: %w", n, protowire.ParseError(valLen))
		}
		if n == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(p[tagLen:])
			if err := each(v); err != nil {
				return nil, err
			}
		} else {
			rest = append(rest, p[:tagLen+valLen]...)
		}
		p = p[tagLen+valLen:]
	}
	return rest, nil
}

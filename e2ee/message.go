package e2ee

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/fxamacker/cbor/v2"
	"github.com/volo-chat/volo/ident"
)

// MessageHeader is the clear, authenticated part of a message.
type MessageHeader struct {
	Conversation ConversationID
	Session      SessionID
	SenderUser   ident.UserID
	Sender       ident.DeviceID // the sender device, whose signing key signs the message
	Counter      uint32         // position in the session's KDF chain, from 0
}

type messageHeaderWire struct {
	Version      uint8  `cbor:"1,keyasint"`
	Conversation []byte `cbor:"2,keyasint"`
	Session      []byte `cbor:"3,keyasint"`
	SenderUser   []byte `cbor:"4,keyasint"`
	Sender       []byte `cbor:"5,keyasint"`
	Counter      uint32 `cbor:"6,keyasint"`
}

func (h MessageHeader) encode() []byte {
	return marshalCBOR(messageHeaderWire{
		Version:      messageVersion,
		Conversation: h.Conversation[:],
		Session:      h.Session[:],
		SenderUser:   idBytes(!h.SenderUser.IsZero(), h.SenderUser.Bytes),
		Sender:       idBytes(!h.Sender.IsZero(), h.Sender.Bytes),
		Counter:      h.Counter,
	})
}

func decodeMessageHeader(data []byte) (MessageHeader, error) {
	var w messageHeaderWire
	if err := unmarshalCanonical("message header", data, maxMessageHeaderSize, &w); err != nil {
		return MessageHeader{}, err
	}
	var h MessageHeader
	if w.Version != messageVersion {
		return h, fmt.Errorf("e2ee: decode message header: unsupported version %d: %w", w.Version, ident.ErrMalformed)
	}
	if len(w.Conversation) != ConversationIDSize || len(w.Session) != SessionIDSize {
		return h, fmt.Errorf("e2ee: decode message header: conversation or session ID size: %w", ident.ErrMalformed)
	}
	copy(h.Conversation[:], w.Conversation)
	copy(h.Session[:], w.Session)
	var err error
	if h.SenderUser, err = ident.UserIDFromBytes(w.SenderUser); err != nil {
		return MessageHeader{}, fmt.Errorf("e2ee: decode message header: %v: %w", err, ident.ErrMalformed)
	}
	if h.Sender, err = ident.DeviceIDFromBytes(w.Sender); err != nil {
		return MessageHeader{}, fmt.Errorf("e2ee: decode message header: %v: %w", err, ident.ErrMalformed)
	}
	h.Counter = w.Counter
	return h, nil
}

// Message is one encrypted, signed message of a sender session.
type Message struct {
	Header     MessageHeader
	Ciphertext []byte // AES-256-GCM of the plaintext, header encoding as associated data
	Sig        []byte // sender device's signature (DomainMsg) over {1: header, 2: ciphertext}
	header     []byte // the header's encoding, as received
}

type messageWire struct {
	Header     cbor.RawMessage `cbor:"1,keyasint"`
	Ciphertext []byte          `cbor:"2,keyasint"`
	Sig        []byte          `cbor:"3,keyasint,omitempty"`
}

func (m *Message) headerBytes() []byte {
	if m.header == nil {
		m.header = m.Header.encode()
	}
	return m.header
}

// signedBytes is what the sender signs: the message encoding without Sig.
func (m *Message) signedBytes() []byte { return encodeMessage(m.headerBytes(), m.Ciphertext, nil) }

// Encode returns the canonical encoding {1: header, 2: ciphertext, 3: sig}.
func (m *Message) Encode() []byte { return encodeMessage(m.headerBytes(), m.Ciphertext, m.Sig) }

// encodeMessage writes the canonical encoding of messageWire by hand (the
// message path is hot): a map of 2 or 3 pairs with keys 1, 2[, 3], the
// header already encoded, and byte strings with shortest-form lengths.
// DecodeMessage checks that what it accepts re-encodes to the same bytes.
func encodeMessage(header, ct, sig []byte) []byte {
	b := make([]byte, 0, len(header)+len(ct)+len(sig)+16)
	if len(sig) > 0 {
		b = append(b, 0xa3)
	} else {
		b = append(b, 0xa2)
	}
	b = append(b, 0x01)
	b = append(b, header...)
	b = append(b, 0x02)
	b = appendCBORBytes(b, ct)
	if len(sig) > 0 {
		b = append(b, 0x03)
		b = appendCBORBytes(b, sig)
	}
	return b
}

// appendCBORBytes appends v as a CBOR byte string (major type 2) with the
// shortest length form.
func appendCBORBytes(b, v []byte) []byte {
	n := uint64(len(v))
	switch {
	case n < 24:
		b = append(b, 0x40|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0x58, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0x59), uint16(n))
	case n <= math.MaxUint32:
		b = binary.BigEndian.AppendUint32(append(b, 0x5a), uint32(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x5b), n)
	}
	return append(b, v...)
}

// DecodeMessage decodes a message and checks its shape (sizes, canonical
// encoding). Signature and decryption are checked by ReceiverSession.Decrypt.
func DecodeMessage(data []byte) (Message, error) {
	var w messageWire
	if err := unmarshalCanonical("message", data, MaxMessageSize, &w); err != nil {
		return Message{}, err
	}
	h, err := decodeMessageHeader(w.Header)
	if err != nil {
		return Message{}, err
	}
	if len(w.Sig) != ident.SignatureSize {
		return Message{}, fmt.Errorf("e2ee: decode message: signature of %d bytes: %w", len(w.Sig), ident.ErrMalformed)
	}
	if len(w.Ciphertext) < 16 || len(w.Ciphertext) > MaxMessagePlaintextSize+16 {
		return Message{}, fmt.Errorf("e2ee: decode message: ciphertext of %d bytes: %w", len(w.Ciphertext), ident.ErrMalformed)
	}
	return Message{Header: h, Ciphertext: w.Ciphertext, Sig: w.Sig, header: w.Header}, nil
}

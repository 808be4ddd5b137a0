package bfd

import (
	"errors"
	"testing"
)

func validPacket() packet {
	return packet{
		Diag: DiagNeighborDown, State: Up, Poll: true, DetectMult: 3, Length: headerLen,
		MyDisc: 0x01020304, YourDisc: 0xa0b0c0d0, DesiredMinTx: 100000, RequiredMinRx: 300000,
	}
}

func TestPacketRoundTrip(t *testing.T) {
	cases := []packet{
		validPacket(),
		{State: Down, DetectMult: 5, Length: headerLen, MyDisc: 1, DesiredMinTx: 1000000, RequiredMinRx: 10000},
		{State: AdminDown, Diag: DiagAdminDown, Final: true, DetectMult: 255, Length: headerLen, MyDisc: ^uint32(0), YourDisc: 7},
		{State: Init, Diag: DiagReverseConcatPathDn, CPI: true, Demand: true, DetectMult: 1, Length: headerLen, MyDisc: 9, YourDisc: 3, RequiredEcho: 50000},
	}
	for _, want := range cases {
		var buf [64]byte
		b := want.encode(buf[:])
		if len(b) != headerLen || b[0]>>5 != 1 || b[3] != headerLen {
			t.Fatalf("encode %+v: bad header % x", want, b)
		}
		var got packet
		if err := decode(b, &got); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", want, err)
		}
		if got != want {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
	}
}

// TestDecodeWire pins the byte layout against a hand-assembled packet (RFC 5880 4.1).
func TestDecodeWire(t *testing.T) {
	b := []byte{
		0x21,        // version 1, diag 1
		0xc0 | 0x10, // state Up, Final
		3, 24,
		0, 0, 0, 42, // my
		0, 0, 0, 7, // your
		0, 1, 0x86, 0xa0, // 100000 µs
		0, 0x0f, 0x42, 0x40, // 1000000 µs
		0, 0, 0, 0,
	}
	var p packet
	if err := decode(b, &p); err != nil {
		t.Fatal(err)
	}
	want := packet{Diag: DiagDetectionExpired, State: Up, Final: true, DetectMult: 3, Length: 24,
		MyDisc: 42, YourDisc: 7, DesiredMinTx: 100000, RequiredMinRx: 1000000}
	if p != want {
		t.Fatalf("got %+v want %+v", p, want)
	}
}

func TestDecodeValidation(t *testing.T) {
	cases := []struct {
		name string
		mut  func(b []byte) []byte
		want error
	}{
		{"valid", func(b []byte) []byte { return b }, nil},
		{"trailing bytes beyond Length are fine", func(b []byte) []byte { return append(b, 0, 0, 0, 0) }, nil},
		{"short", func(b []byte) []byte { return b[:23] }, errShort},
		{"empty", func(b []byte) []byte { return nil }, errShort},
		{"version 0", func(b []byte) []byte { b[0] &^= 0xe0; return b }, errVersion},
		{"version 2", func(b []byte) []byte { b[0] = 2<<5 | b[0]&0x1f; return b }, errVersion},
		{"length 23", func(b []byte) []byte { b[3] = 23; return b }, errLength},
		{"length 0", func(b []byte) []byte { b[3] = 0; return b }, errLength},
		{"length beyond payload", func(b []byte) []byte { b[3] = 25; return b }, errTruncated},
		{"auth bit with length 24", func(b []byte) []byte { b[1] |= flagAuth; return b }, errLength},
		{"auth bit", func(b []byte) []byte { b[1] |= flagAuth; b[3] = 26; return append(b, 1, 2) }, errAuth},
		{"multiplier 0", func(b []byte) []byte { b[2] = 0; return b }, errMultiplier},
		{"multipoint", func(b []byte) []byte { b[1] |= flagMultipoint; return b }, errMultipoint},
		{"my discriminator 0", func(b []byte) []byte { clear(b[4:8]); return b }, errMyDisc},
		{"your discriminator 0 while Up", func(b []byte) []byte { clear(b[8:12]); return b }, errYourDisc},
		{"your discriminator 0 while Init", func(b []byte) []byte { clear(b[8:12]); b[1] = b[1]&0x3f | byte(Init)<<6; return b }, errYourDisc},
		{"your discriminator 0 while Down", func(b []byte) []byte { clear(b[8:12]); b[1] = b[1]&0x3f | byte(Down)<<6; return b }, nil},
		{"your discriminator 0 while AdminDown", func(b []byte) []byte { clear(b[8:12]); b[1] &= 0x3f; return b }, nil},
		{"poll and final", func(b []byte) []byte { b[1] |= flagFinal; return b }, errPollFinal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := validPacket()
			var buf [headerLen]byte
			b := c.mut(append([]byte(nil), p.encode(buf[:])...))
			var got packet
			if err := decode(b, &got); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("decode: got %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	p := validPacket()
	var buf [headerLen]byte
	b := p.encode(buf[:])
	var q packet
	if n := testing.AllocsPerRun(100, func() { _ = decode(b, &q); _ = decode(b[:3], &q) }); n != 0 {
		t.Fatalf("decode allocates %v times", n)
	}
}

func FuzzDecode(f *testing.F) {
	p := validPacket()
	var buf [headerLen]byte
	f.Add(append([]byte(nil), p.encode(buf[:])...))
	f.Add([]byte{0x20, 0x40, 3, 24, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{0x20, 0x44, 3, 26, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet
		if err := decode(b, &p); err != nil {
			return
		}
		// Whatever decodes must survive a round trip unchanged and satisfy the rules.
		if p.DetectMult == 0 || p.MyDisc == 0 || p.Auth || p.Multipoint || (p.Poll && p.Final) {
			t.Fatalf("accepted an invalid packet %+v", p)
		}
		var out [headerLen]byte
		var q packet
		if err := decode(p.encode(out[:]), &q); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		p.Length = headerLen
		if p != q {
			t.Fatalf("round trip: %+v != %+v", p, q)
		}
	})
}

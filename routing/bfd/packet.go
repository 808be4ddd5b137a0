package bfd

import (
	"encoding/binary"
	"errors"
	"strconv"
	"time"
)

// State is a BFD session state as carried in the Sta field (RFC 5880 4.1).
type State uint8

// Session states; the numeric values are the wire values.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Down:
		return "Down"
	case Init:
		return "Init"
	case Up:
		return "Up"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Diag is the diagnostic code: why the local session last left Up (RFC 5880 4.1).
type Diag uint8

// Diagnostic codes; the numeric values are the wire values.
const (
	DiagNone                Diag = 0
	DiagDetectionExpired    Diag = 1 // Control Detection Time Expired: the peer went silent
	DiagEchoFailed          Diag = 2
	DiagNeighborDown        Diag = 3 // Neighbor Signaled Session Down (Down or AdminDown from the peer)
	DiagForwardingReset     Diag = 4
	DiagPathDown            Diag = 5
	DiagConcatPathDown      Diag = 6
	DiagAdminDown           Diag = 7 // Administratively Down: Remove was called
	DiagReverseConcatPathDn Diag = 8
)

func (d Diag) String() string {
	switch d {
	case DiagNone:
		return "none"
	case DiagDetectionExpired:
		return "detection time expired"
	case DiagEchoFailed:
		return "echo failed"
	case DiagNeighborDown:
		return "neighbor signaled down"
	case DiagForwardingReset:
		return "forwarding plane reset"
	case DiagPathDown:
		return "path down"
	case DiagConcatPathDown:
		return "concatenated path down"
	case DiagAdminDown:
		return "administratively down"
	case DiagReverseConcatPathDn:
		return "reverse concatenated path down"
	}
	return "Diag(" + strconv.Itoa(int(d)) + ")"
}

// Wire constants (RFC 5880 4.1, RFC 5881 4).
const (
	version    = 1
	headerLen  = 24   // mandatory section, no authentication
	authMinLen = 26   // mandatory section plus the smallest authentication section header
	port       = 3784 // single-hop control packets
	ttlSingle  = 255  // GTSM: sent with 255, and anything else was routed, so is dropped
)

// Flag bits in the second octet.
const (
	flagPoll       = 1 << 5
	flagFinal      = 1 << 4
	flagCPI        = 1 << 3
	flagAuth       = 1 << 2
	flagDemand     = 1 << 1
	flagMultipoint = 1 << 0
)

// packet is a decoded BFD Control packet. Intervals are in microseconds, as on the wire.
type packet struct {
	Diag          Diag
	State         State
	Poll, Final   bool
	CPI           bool // control plane independent: set by a Server with ControlPlaneIndependent
	Auth          bool
	Demand        bool
	Multipoint    bool
	DetectMult    uint8
	Length        uint8
	MyDisc        uint32
	YourDisc      uint32
	DesiredMinTx  uint32 // µs
	RequiredMinRx uint32 // µs
	RequiredEcho  uint32 // µs; we always advertise 0 (no echo function)
}

// Validation errors of decode: one per discard rule of RFC 5880 6.8.6 that can be
// checked without a session. They are fixed values so that discarding never allocates.
var (
	errShort      = errors.New("bfd: packet shorter than 24 bytes")
	errVersion    = errors.New("bfd: version is not 1")
	errLength     = errors.New("bfd: length field below minimum")
	errTruncated  = errors.New("bfd: length field beyond the UDP payload")
	errMultiplier = errors.New("bfd: detect multiplier is 0")
	errMultipoint = errors.New("bfd: multipoint bit set")
	errMyDisc     = errors.New("bfd: my discriminator is 0")
	errYourDisc   = errors.New("bfd: your discriminator 0 in a packet neither Down nor AdminDown")
	errAuth       = errors.New("bfd: authentication is not supported")
	errPollFinal  = errors.New("bfd: poll and final both set")
	errTTL        = errors.New("bfd: TTL/hop limit is not 255 (not single hop)")
)

// decode parses and validates b into p without allocating. It applies every
// session-independent discard rule of RFC 5880 6.8.6, plus: no authentication (we
// configure none, so an A bit means a mismatch), and P and F never both set (4.1).
func decode(b []byte, p *packet) error {
	if len(b) < headerLen {
		return errShort
	}
	if b[0]>>5 != version {
		return errVersion
	}
	flags := b[1]
	*p = packet{
		Diag:          Diag(b[0] & 0x1f),
		State:         State(b[1] >> 6),
		Poll:          flags&flagPoll != 0,
		Final:         flags&flagFinal != 0,
		CPI:           flags&flagCPI != 0,
		Auth:          flags&flagAuth != 0,
		Demand:        flags&flagDemand != 0,
		Multipoint:    flags&flagMultipoint != 0,
		DetectMult:    b[2],
		Length:        b[3],
		MyDisc:        binary.BigEndian.Uint32(b[4:]),
		YourDisc:      binary.BigEndian.Uint32(b[8:]),
		DesiredMinTx:  binary.BigEndian.Uint32(b[12:]),
		RequiredMinRx: binary.BigEndian.Uint32(b[16:]),
		RequiredEcho:  binary.BigEndian.Uint32(b[20:]),
	}
	need := headerLen
	if p.Auth {
		need = authMinLen
	}
	switch {
	case int(p.Length) < need:
		return errLength
	case int(p.Length) > len(b):
		return errTruncated
	case p.DetectMult == 0:
		return errMultiplier
	case p.Multipoint:
		return errMultipoint
	case p.MyDisc == 0:
		return errMyDisc
	case p.YourDisc == 0 && p.State != Down && p.State != AdminDown:
		return errYourDisc
	case p.Auth:
		return errAuth
	case p.Poll && p.Final:
		return errPollFinal
	}
	return nil
}

// encode writes p into b (at least 24 bytes) as a packet without authentication and
// returns the 24 bytes written. Version and Length are always 1 and 24.
func (p *packet) encode(b []byte) []byte {
	b = b[:headerLen]
	b[0] = version<<5 | byte(p.Diag&0x1f)
	f := byte(p.State&3) << 6
	for _, x := range [...]struct {
		on  bool
		bit byte
	}{{p.Poll, flagPoll}, {p.Final, flagFinal}, {p.CPI, flagCPI}, {p.Auth, flagAuth}, {p.Demand, flagDemand}, {p.Multipoint, flagMultipoint}} {
		if x.on {
			f |= x.bit
		}
	}
	b[1] = f
	b[2] = p.DetectMult
	b[3] = headerLen
	binary.BigEndian.PutUint32(b[4:], p.MyDisc)
	binary.BigEndian.PutUint32(b[8:], p.YourDisc)
	binary.BigEndian.PutUint32(b[12:], p.DesiredMinTx)
	binary.BigEndian.PutUint32(b[16:], p.RequiredMinRx)
	binary.BigEndian.PutUint32(b[20:], p.RequiredEcho)
	return b
}

// micros converts d to the wire's microseconds, clamped to what 32 bits hold.
func micros(d time.Duration) uint32 {
	us := d / time.Microsecond
	switch {
	case us < 0:
		return 0
	case us > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(us)
}

// dur converts wire microseconds to a Duration.
func dur(us uint32) time.Duration { return time.Duration(us) * time.Microsecond }

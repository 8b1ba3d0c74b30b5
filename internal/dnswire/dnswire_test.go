package dnswire

import (
	"testing"

	"github.com/miekg/dns"
)

func packed(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnswers(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	reply := func(edit func(m *dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetReply(q)
		if edit != nil {
			edit(m)
		}
		return packed(t, m)
	}
	for _, tc := range []struct {
		name string
		resp []byte
		want bool
	}{
		{"the reply", reply(nil), true},
		{"other letter case", reply(func(m *dns.Msg) { m.Question[0].Name = "WEB.default.SVC.cluster.local." }), true},
		{"another name", reply(func(m *dns.Msg) { m.Question[0].Name = "db.default.svc.cluster.local." }), false},
		{"another type", reply(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), false},
		{"not a response", packed(t, q), false},
		{"no question", reply(func(m *dns.Msg) { m.Question = nil }), false},
		{"short", []byte{1, 2, 3}, false},
	} {
		if got := Answers(tc.resp, packed(t, q)); got != tc.want {
			t.Errorf("%s: Answers = %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestSkipName(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire []byte
		end  int
		ok   bool
	}{
		{"root", []byte{0}, 1, true},
		{"two labels", []byte{1, 'a', 2, 'b', 'c', 0}, 6, true},
		{"pointer", []byte{1, 'a', 0xC0, 12}, 4, true},
		{"pointer cut short", []byte{1, 'a', 0xC0}, 0, false},
		{"reserved label type", []byte{0x40}, 0, false},
		{"runs off the end", []byte{5, 'a'}, 0, false},
	} {
		end, err := SkipName(tc.wire, 0)
		if (err == nil) != tc.ok || (tc.ok && end != tc.end) {
			t.Errorf("%s: SkipName = %d, %v; want %d, ok %t", tc.name, end, err, tc.end, tc.ok)
		}
	}
}

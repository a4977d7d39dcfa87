package seal

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func seq(from, to byte) []byte {
	var b []byte
	for c := int(from); c <= int(to); c++ {
		b = append(b, byte(c))
	}
	return b
}

// TestHMACSHA256RFC4231 pins crypto/hmac with SHA-256, which signs seals,
// to the known answers of RFC 4231 section 4.
func TestHMACSHA256RFC4231(t *testing.T) {
	tests := []struct {
		name      string
		key, data []byte
		want      string // hex; shorter than 64 digits means a truncated MAC
	}{
		{"case 1", bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"),
			"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
		{"case 2", []byte("Jefe"), []byte("what do ya want for nothing?"),
			"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{"case 3", bytes.Repeat([]byte{0xaa}, 20), bytes.Repeat([]byte{0xdd}, 50),
			"773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
		{"case 4", seq(0x01, 0x19), bytes.Repeat([]byte{0xcd}, 50),
			"82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
		{"case 5 truncated", bytes.Repeat([]byte{0x0c}, 20), []byte("Test With Truncation"),
			"a3b6167473100ee06e0c796c2955552b"},
		{"case 6", bytes.Repeat([]byte{0xaa}, 131), []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
			"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
		{"case 7", bytes.Repeat([]byte{0xaa}, 131), []byte("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."),
			"9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := hmac.New(sha256.New, tt.key)
			m.Write(tt.data)
			got := hex.EncodeToString(m.Sum(nil))[:len(tt.want)]
			if got != tt.want {
				t.Errorf("HMAC-SHA256 = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestHKDFSHA256RFC5869 pins crypto/hkdf with SHA-256, which derives the
// seal key, to the known answers of RFC 5869 appendix A.1 to A.3.
func TestHKDFSHA256RFC5869(t *testing.T) {
	tests := []struct {
		name             string
		ikm, salt, info  []byte
		length           int
		wantPRK, wantOKM string
	}{
		{"case 1", bytes.Repeat([]byte{0x0b}, 22), seq(0x00, 0x0c), seq(0xf0, 0xf9), 42,
			"077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
			"3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
		{"case 2", seq(0x00, 0x4f), seq(0x60, 0xaf), seq(0xb0, 0xff), 82,
			"06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
			"b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
		{"case 3", bytes.Repeat([]byte{0x0b}, 22), nil, nil, 42,
			"19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
			"8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prk, err := hkdf.Extract(sha256.New, tt.ikm, tt.salt)
			if err != nil {
				t.Fatalf("hkdf.Extract: %v", err)
			}
			if got := hex.EncodeToString(prk); got != tt.wantPRK {
				t.Errorf("hkdf.Extract = %s, want %s", got, tt.wantPRK)
			}
			okm, err := hkdf.Expand(sha256.New, prk, string(tt.info), tt.length)
			if err != nil {
				t.Fatalf("hkdf.Expand: %v", err)
			}
			if got := hex.EncodeToString(okm); got != tt.wantOKM {
				t.Errorf("hkdf.Expand = %s, want %s", got, tt.wantOKM)
			}
			// hkdf.Key, which DeriveKey calls, is Extract then Expand.
			key, err := hkdf.Key(sha256.New, tt.ikm, tt.salt, string(tt.info), tt.length)
			if err != nil {
				t.Fatalf("hkdf.Key: %v", err)
			}
			if got := hex.EncodeToString(key); got != tt.wantOKM {
				t.Errorf("hkdf.Key = %s, want %s", got, tt.wantOKM)
			}
		})
	}
}

package broker

import (
	"bufio"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Password formats accepted in User.Password and in a password file. The
// salted ones are what `fleet-relay passwd` and `mosquitto_passwd` write;
// plain and sha256:<hex> still work but New logs a warning for each.
const (
	// FormatPBKDF2 is mosquitto_passwd's default since Mosquitto 2.0:
	// $7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>.
	FormatPBKDF2 = "pbkdf2"
	// FormatBcrypt is $2a$/$2b$/$2y$<cost>$...
	FormatBcrypt = "bcrypt"
)

// Defaults of HashPassword.
const (
	// DefaultPBKDF2Iterations is 200 times mosquitto_passwd's 101 and costs
	// about 12 ms per check on a small cloud core; a successful check is
	// cached per account (see verifier), so only a robot's first connection
	// and failed guesses pay for it, and a thousand robots reconnecting to a
	// restarted relay cost seconds of CPU, not minutes.
	DefaultPBKDF2Iterations = 20_000
	pbkdf2SaltBytes         = 12 // as mosquitto_passwd
	pbkdf2KeyBytes          = 64 // SHA-512 output
	maxPBKDF2Iterations     = 10_000_000
)

// HashPassword returns a salted hash of password in format (FormatPBKDF2,
// the default, which Mosquitto reads too, or FormatBcrypt). cost is the bcrypt cost or the PBKDF2 iterations; 0
// takes the default (bcrypt.DefaultCost, DefaultPBKDF2Iterations).
func HashPassword(password, format string, cost int) (string, error) {
	if password == "" {
		return "", fmt.Errorf("%w: empty password", ErrConfig)
	}
	switch format {
	case FormatBcrypt:
		if cost == 0 {
			cost = bcrypt.DefaultCost
		}
		h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
		if err != nil {
			return "", fmt.Errorf("bcrypt: %w", err)
		}
		return string(h), nil
	case FormatPBKDF2, "":
		if cost == 0 {
			cost = DefaultPBKDF2Iterations
		}
		if cost < 1 || cost > maxPBKDF2Iterations {
			return "", fmt.Errorf("%w: pbkdf2 iterations must be 1..%d, got %d", ErrConfig, maxPBKDF2Iterations, cost)
		}
		salt := make([]byte, pbkdf2SaltBytes)
		_, _ = rand.Read(salt)
		key, err := pbkdf2.Key(sha512.New, password, salt, cost, pbkdf2KeyBytes)
		if err != nil {
			return "", fmt.Errorf("pbkdf2: %w", err)
		}
		return fmt.Sprintf("$7$%d$%s$%s", cost, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key)), nil
	}
	return "", fmt.Errorf("%w: unknown password format %q (want bcrypt or pbkdf2)", ErrConfig, format)
}

// CheckPasswordFormat returns an error naming the problem when stored is
// a malformed hash; plain text is accepted (with a warning at start).
func CheckPasswordFormat(stored string) error {
	_, err := passwordKind(stored)
	return err
}

// passwordKind classifies a stored password: "bcrypt", "pbkdf2",
// "sha512" (mosquitto 1.x $6$), "sha256" (unsalted, deprecated) or
// "plain" (deprecated). It returns an error for a malformed hash.
func passwordKind(stored string) (string, error) {
	switch {
	case strings.HasPrefix(stored, "$2a$"), strings.HasPrefix(stored, "$2b$"), strings.HasPrefix(stored, "$2y$"):
		if _, err := bcrypt.Cost([]byte(stored)); err != nil {
			return "", fmt.Errorf("malformed bcrypt hash: %v", err)
		}
		return "bcrypt", nil
	case strings.HasPrefix(stored, "$7$"):
		if _, _, _, err := parsePBKDF2(stored); err != nil {
			return "", err
		}
		return "pbkdf2", nil
	case strings.HasPrefix(stored, "$6$"):
		if _, _, err := parseSHA512(stored); err != nil {
			return "", err
		}
		return "sha512", nil
	case strings.HasPrefix(stored, "sha256:"):
		if b, err := hex.DecodeString(stored[len("sha256:"):]); err != nil || len(b) != sha256.Size {
			return "", fmt.Errorf("malformed sha256:<hex> password: want 64 hex digits")
		}
		return "sha256", nil
	case strings.HasPrefix(stored, "$"):
		return "", fmt.Errorf("unknown password hash %q (want bcrypt $2b$, mosquitto_passwd $7$ or $6$)", truncate(stored, 4))
	}
	return "plain", nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func parsePBKDF2(stored string) (iter int, salt, key []byte, err error) {
	parts := strings.Split(stored, "$") // "", "7", iter, salt, hash
	if len(parts) != 5 {
		return 0, nil, nil, fmt.Errorf("malformed $7$ hash: want $7$<iterations>$<salt>$<hash>")
	}
	if iter, err = strconv.Atoi(parts[2]); err != nil || iter < 1 || iter > maxPBKDF2Iterations {
		return 0, nil, nil, fmt.Errorf("malformed $7$ hash: iterations %q", parts[2])
	}
	if salt, err = base64.StdEncoding.DecodeString(parts[3]); err != nil || len(salt) == 0 {
		return 0, nil, nil, fmt.Errorf("malformed $7$ hash: salt is not base64")
	}
	if key, err = base64.StdEncoding.DecodeString(parts[4]); err != nil || len(key) == 0 {
		return 0, nil, nil, fmt.Errorf("malformed $7$ hash: hash is not base64")
	}
	return iter, salt, key, nil
}

func parseSHA512(stored string) (salt, sum []byte, err error) {
	parts := strings.Split(stored, "$") // "", "6", salt, hash
	if len(parts) != 4 {
		return nil, nil, fmt.Errorf("malformed $6$ hash: want $6$<salt>$<hash>")
	}
	if salt, err = base64.StdEncoding.DecodeString(parts[2]); err != nil {
		return nil, nil, fmt.Errorf("malformed $6$ hash: salt is not base64")
	}
	if sum, err = base64.StdEncoding.DecodeString(parts[3]); err != nil || len(sum) != sha512.Size {
		return nil, nil, fmt.Errorf("malformed $6$ hash: hash is not a base64 SHA-512")
	}
	return salt, sum, nil
}

// checkPassword reports whether got matches the stored password (any
// format passwordKind accepts). It is slow for the salted formats.
func checkPassword(stored, got string) bool {
	kind, err := passwordKind(stored)
	if err != nil {
		return false
	}
	switch kind {
	case "bcrypt":
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(got)) == nil
	case "pbkdf2":
		iter, salt, want, _ := parsePBKDF2(stored)
		key, err := pbkdf2.Key(sha512.New, got, salt, iter, len(want))
		return err == nil && subtle.ConstantTimeCompare(key, want) == 1
	case "sha512":
		salt, want, _ := parseSHA512(stored)
		h := sha512.New()
		h.Write([]byte(got))
		h.Write(salt)
		return subtle.ConstantTimeCompare(h.Sum(nil), want) == 1
	case "sha256":
		sum := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare([]byte(strings.ToLower(stored[len("sha256:"):])), []byte(hex.EncodeToString(sum[:]))) == 1
	}
	return subtle.ConstantTimeCompare([]byte(stored), []byte(got)) == 1
}

// ReadPasswordFile parses a Mosquitto password file (username:hash per
// line, # comments) into robot accounts.
func ReadPasswordFile(r io.Reader) ([]User, error) {
	var users []User
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" || hash == "" {
			return nil, fmt.Errorf("line %d: want username:hash", n)
		}
		if _, err := passwordKind(hash); err != nil {
			return nil, fmt.Errorf("line %d (%s): %v", n, name, err)
		}
		users = append(users, User{Username: name, Password: hash})
	}
	return users, sc.Err()
}

package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/volo-chat/volo/e2ee"
)

// Layout of a home directory.
const (
	// KeysFile holds the device's private keys (e2ee.DeviceKeys.MarshalBinary)
	// encrypted with the passphrase (e2ee backup encryption: Argon2id and
	// chunked AES-256-GCM).
	KeysFile = "device.key"
	// StateFile holds the public state: user and device IDs, node URL and
	// the last verified chain. It is plain JSON.
	StateFile = "state.json"

	// HomeDirMode is the mode a home directory is created with; a home
	// that others can read or enter is refused.
	HomeDirMode fs.FileMode = 0o700
	// HomeFileMode is the mode of every file in a home directory.
	HomeFileMode fs.FileMode = 0o600

	// MinPassphraseLength is the fewest characters (Unicode code points)
	// a new passphrase may have. Only new passphrases are checked: keys
	// encrypted before the rule still open with theirs.
	MinPassphraseLength = 8

	// stateVersion is the version field of StateFile.
	stateVersion = 1
	// maxKeysFileSize and maxStateFileSize bound what Home reads back:
	// an encrypted DeviceKeys is a few hundred bytes, a full chain in
	// base64 under 3 MiB.
	maxKeysFileSize  = 64 << 10
	maxStateFileSize = 4 << 20
)

// Errors of a home directory.
var (
	// ErrNoHome reports a home without a device: register or link first.
	ErrNoHome = errors.New("client: no device in this home (run register or link join first)")
	// ErrHomeInUse reports a home that already holds a device.
	ErrHomeInUse = errors.New("client: this home already holds a device")
	// ErrHomePermissions reports a home or file that others may read.
	ErrHomePermissions = errors.New("client: home is accessible by other users")
	// ErrWrongPassphrase reports a passphrase that does not open the keys.
	ErrWrongPassphrase = errors.New("client: wrong passphrase")
	// ErrEmptyPassphrase reports an empty passphrase for new keys.
	ErrEmptyPassphrase = errors.New("client: empty passphrase")
	// ErrPassphraseTooShort reports a new passphrase shorter than
	// MinPassphraseLength.
	ErrPassphraseTooShort = fmt.Errorf("client: a new passphrase must have at least %d characters", MinPassphraseLength)
	// ErrCorruptHome reports a home whose files do not agree or do not parse.
	ErrCorruptHome = errors.New("client: corrupt home")
)

// State is the public part of a home: nothing in it is secret.
type State struct {
	Version int    `json:"version"`
	User    string `json:"user_id"`
	Device  string `json:"device_id"`
	Node    string `json:"node"`
	// Chain is the last chain of User this device verified, genesis first.
	Chain [][]byte `json:"chain"`
}

// Home is a device's home directory.
type Home struct {
	dir string
	kdf e2ee.BackupParams
}

// OpenHome opens the home directory dir. It does not create it: a
// directory that does not exist yet is a home without a device, made by
// Create. An existing dir must be a directory that only its owner can
// read or enter. kdf sets the Argon2id cost of encrypting new keys; the
// zero value means e2ee.DefaultBackupParams.
func OpenHome(dir string, kdf e2ee.BackupParams) (*Home, error) {
	if dir == "" {
		return nil, errors.New("client: no home directory given")
	}
	if kdf == (e2ee.BackupParams{}) {
		kdf = e2ee.DefaultBackupParams()
	}
	h := &Home{dir: dir, kdf: kdf}
	if err := h.checkDir(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return h, nil
}

// checkDir checks that the home is a directory that only its owner can
// read or enter; fs.ErrNotExist if there is none.
func (h *Home) checkDir() error {
	fi, err := os.Stat(h.dir)
	if err != nil {
		return fmt.Errorf("client: home: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("client: home %s is not a directory", h.dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o (run chmod 700 on it)", ErrHomePermissions, h.dir, fi.Mode().Perm())
	}
	return nil
}

// CheckNewPassphrase checks that p may protect new device keys: at least
// MinPassphraseLength characters (ErrPassphraseTooShort), counted as
// Unicode code points (bytes that are not UTF-8 count one each).
// Passphrases of existing keys are never checked.
func CheckNewPassphrase(p []byte) error {
	if len(p) == 0 {
		return ErrEmptyPassphrase
	}
	if utf8.RuneCount(p) < MinPassphraseLength {
		return ErrPassphraseTooShort
	}
	return nil
}

// Dir returns the home's directory.
func (h *Home) Dir() string { return h.dir }

// HasDevice reports whether the home holds device keys.
func (h *Home) HasDevice() (bool, error) {
	_, err := os.Stat(filepath.Join(h.dir, KeysFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("client: home: %w", err)
	}
	return true, nil
}

// Create stores a new device: its keys encrypted with passphrase and its
// public state. It refuses a home that holds a device already. It creates
// the directory (mode HomeDirMode, with any missing parents) if needed;
// when it fails it leaves nothing behind: no file, and no directory it
// created.
func (h *Home) Create(keys e2ee.DeviceKeys, passphrase []byte, st State) error {
	_, err := h.create(keys, passphrase, st)
	return err
}

// create is Create that also returns undo, which removes what it made (the
// files, and the directories it created) for a caller whose next step
// fails: the node refusing the new device.
func (h *Home) create(keys e2ee.DeviceKeys, passphrase []byte, st State) (undo func(), err error) {
	if len(passphrase) == 0 {
		return nil, ErrEmptyPassphrase
	}
	if has, err := h.HasDevice(); err != nil {
		return nil, err
	} else if has {
		return nil, fmt.Errorf("%w: %s", ErrHomeInUse, h.dir)
	}
	raw, err := keys.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("client: encode device keys: %w", err)
	}
	sealed, err := e2ee.EncryptBackup(raw, passphrase, h.kdf, nil)
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("client: encrypt device keys: %w", err)
	}
	made, err := mkdirs(h.dir)
	if err != nil {
		return nil, err
	}
	undo = func() {
		os.Remove(filepath.Join(h.dir, KeysFile))
		os.Remove(filepath.Join(h.dir, StateFile))
		for _, d := range made {
			os.Remove(d)
		}
	}
	if err := h.checkDir(); err != nil {
		undo()
		return nil, err
	}
	// State first: a home with a state and no keys is still "empty" to
	// HasDevice, so even a crash in between leaves a home that can be
	// reused.
	if err := h.SaveState(st); err != nil {
		undo()
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(h.dir, KeysFile), sealed); err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}

// mkdirs creates dir and its missing parents with mode HomeDirMode and
// returns the directories it created, innermost first (the order to
// remove them in).
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("client: home: %w", err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, HomeDirMode); err != nil {
		for _, d := range missing {
			os.Remove(d)
		}
		return nil, fmt.Errorf("client: home: %w", err)
	}
	return missing, nil
}

// Keys decrypts the device keys with passphrase and checks that they are
// the device the state names.
func (h *Home) Keys(passphrase []byte) (e2ee.DeviceKeys, error) {
	st, err := h.State()
	if err != nil {
		return e2ee.DeviceKeys{}, err
	}
	sealed, err := readFileLimited(filepath.Join(h.dir, KeysFile), maxKeysFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return e2ee.DeviceKeys{}, ErrNoHome
	}
	if err != nil {
		return e2ee.DeviceKeys{}, err
	}
	raw, err := e2ee.DecryptBackup(sealed, passphrase)
	if errors.Is(err, e2ee.ErrWrongPassword) {
		return e2ee.DeviceKeys{}, fmt.Errorf("%w for %s", ErrWrongPassphrase, filepath.Join(h.dir, KeysFile))
	}
	if err != nil {
		return e2ee.DeviceKeys{}, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	keys, err := e2ee.ParseDeviceKeys(raw)
	clear(raw)
	if err != nil {
		return e2ee.DeviceKeys{}, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	if keys.ID().String() != st.Device {
		return e2ee.DeviceKeys{}, fmt.Errorf("%w: %s holds device %s, %s names %s", ErrCorruptHome, KeysFile, keys.ID(), StateFile, st.Device)
	}
	return keys, nil
}

// State reads the public state. ErrNoHome if the home holds no device.
func (h *Home) State() (State, error) {
	if has, err := h.HasDevice(); err != nil {
		return State{}, err
	} else if !has {
		return State{}, ErrNoHome
	}
	data, err := readFileLimited(filepath.Join(h.dir, StateFile), maxStateFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, fmt.Errorf("%w: %s is missing", ErrCorruptHome, StateFile)
	}
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("%w: %s: %w", ErrCorruptHome, StateFile, err)
	}
	if st.Version != stateVersion {
		return State{}, fmt.Errorf("%w: %s version %d, want %d", ErrCorruptHome, StateFile, st.Version, stateVersion)
	}
	return st, nil
}

// SaveState replaces the public state.
func (h *Home) SaveState(st State) error {
	st.Version = stateVersion
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("client: encode state: %w", err)
	}
	return writeFileAtomic(filepath.Join(h.dir, StateFile), append(data, '\n'))
}

// writeFileAtomic writes data to a temporary file of mode HomeFileMode,
// syncs it and renames it over path, so a crash leaves the old or the new
// file, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(HomeFileMode); err != nil {
		tmp.Close()
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if _, err := io.Copy(tmp, bytes.NewReader(data)); err != nil {
		tmp.Close()
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	return nil
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("client: read %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o (run chmod 600 on it)", ErrHomePermissions, path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("client: read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorruptHome, path, limit)
	}
	return data, nil
}

// Unlock derives the key of passphrase once (Argon2id, the cost of the
// keys file's header) and returns the device keys with that key, which
// also encrypts the home's chat store: one derivation per process, none
// per message.
func (h *Home) Unlock(passphrase []byte) (e2ee.DeviceKeys, *e2ee.BackupKey, error) {
	st, err := h.State()
	if err != nil {
		return e2ee.DeviceKeys{}, nil, err
	}
	path := filepath.Join(h.dir, KeysFile)
	sealed, err := readFileLimited(path, maxKeysFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return e2ee.DeviceKeys{}, nil, ErrNoHome
	}
	if err != nil {
		return e2ee.DeviceKeys{}, nil, err
	}
	hdr, err := e2ee.ReadBackupHeader(bytes.NewReader(sealed))
	if err != nil {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	key, err := hdr.DeriveKey(passphrase)
	if errors.Is(err, e2ee.ErrWrongPassword) {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w for %s", ErrWrongPassphrase, path)
	}
	if err != nil {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	rd, err := e2ee.NewBackupReaderWithKey(bytes.NewReader(sealed), key)
	if err != nil {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	raw, err := io.ReadAll(rd)
	if err != nil {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	keys, err := e2ee.ParseDeviceKeys(raw)
	clear(raw)
	if err != nil {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w: %s: %w", ErrCorruptHome, KeysFile, err)
	}
	if keys.ID().String() != st.Device {
		return e2ee.DeviceKeys{}, nil, fmt.Errorf("%w: %s holds device %s, %s names %s", ErrCorruptHome, KeysFile, keys.ID(), StateFile, st.Device)
	}
	return keys, key, nil
}

package cardano

import (
	"fmt"
	"strconv"
	"strings"
)

// Network is a Cardano network: the magic number the handshake checks
// and the network ID written into addresses (1 mainnet, 0 every test
// network).
type Network struct {
	Name  string
	Magic uint32
	ID    uint8
}

// The networks ParseNetwork knows by name.
var (
	Mainnet = Network{Name: "mainnet", Magic: 764824073, ID: 1}
	Preprod = Network{Name: "preprod", Magic: 1, ID: 0}
	Preview = Network{Name: "preview", Magic: 2, ID: 0}
	// Devnet is the embedded development node of chain/devnet.
	Devnet = Network{Name: "devnet", Magic: 42, ID: 0}
)

var knownNetworks = []Network{Mainnet, Preprod, Preview, Devnet}

func (n Network) String() string { return n.Name }

// ParseNetwork reads a network name ("mainnet", "preprod", "preview",
// "devnet") or a decimal network magic. A magic of a named network gives
// that network; any other magic is a test network (address network ID 0)
// named by its number.
func ParseNetwork(s string) (Network, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, n := range knownNetworks {
		if s == n.Name {
			return n, nil
		}
	}
	magic, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return Network{}, fmt.Errorf("cardano: unknown network %q: want mainnet, preprod, preview, devnet or a decimal network magic", s)
	}
	for _, n := range knownNetworks {
		if uint32(magic) == n.Magic {
			return n, nil
		}
	}
	return Network{Name: strconv.FormatUint(magic, 10), Magic: uint32(magic), ID: 0}, nil
}

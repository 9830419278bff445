package node

import (
	"reflect"
	"strings"
	"testing"

	"github.com/volo-chat/volo/configs"
)

func TestDevTOMLIsTheDefault(t *testing.T) {
	doc, err := configs.Get("dev.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Decode over a zero Config: every field of the default must be in the file.
	got, err := DecodeConfig(Config{}, "dev.toml", doc)
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("dev.toml decodes to\n%+v\nDefaultConfig is\n%+v", got, want)
	}
}

func TestNodeTOMLIsComplete(t *testing.T) {
	doc, err := configs.Get("node.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := DecodeConfig(Config{}, "node.toml", doc)
	if err != nil {
		t.Fatal(err)
	}
	// Every field set: reflect over the struct and find zero leaves, other
	// than the empty lists the operator fills in (bootstrap peers, OAuth
	// providers, addresses the devnet funds).
	var zero []string
	walkZero(reflect.ValueOf(cfg), "", &zero)
	for _, f := range zero {
		if f != ".P2P.Bootstrap" && f != ".Registry.OIDC" && f != ".Chain.Devnet.FundAddresses" {
			t.Errorf("node.toml leaves %s unset", f)
		}
	}
}

func walkZero(v reflect.Value, path string, out *[]string) {
	if v.Kind() == reflect.Struct {
		for i := range v.NumField() {
			walkZero(v.Field(i), path+"."+v.Type().Field(i).Name, out)
		}
		return
	}
	if v.IsZero() && v.Kind() != reflect.Bool {
		*out = append(*out, path)
	}
}

func TestDecodeConfigErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown top-level key", "data_dirr = \"x\"\n", []string{"line 1", `unknown field "data_dirr"`}},
		{"unknown nested key", "[p2p.conn_manager]\nlow_water = 1\nhighwater = 2\n", []string{"line 3", `"p2p.conn_manager.highwater"`}},
		{"wrong type", "[api]\nlisten = 8080\n", []string{"line 2", `"api.listen"`}},
		{"bad duration", "[api]\nshutdown_timeout = \"soon\"\n", []string{"line 2", `"api.shutdown_timeout"`, "bad duration"}},
		{"malformed multiaddr", "[p2p]\nlisten = [\"/ip4/1.2.3.4/tcp/1\", \"/ipv4/oops\"]\n", []string{"p2p.listen[1]", "/ipv4/oops"}},
		{"bootstrap without peer ID", "[p2p]\nbootstrap = [\"/ip4/1.2.3.4/tcp/4001\"]\n", []string{"p2p.bootstrap[0]", "/p2p/<peer ID>"}},
		{"bad log level", "[log]\nlevel = \"loud\"\n", []string{"log.level", "loud"}},
		{"bad log format", "[log]\nformat = \"xml\"\n", []string{"log.format"}},
		{"bad api listen", "[api]\nlisten = \"localhost\"\n", []string{"api.listen"}},
		{"syntax error", "[api\n", []string{"line 1"}},
		{"bad public url", "[api]\npublic_url = \"example.org/x\"\n", []string{"api.public_url"}},
		{"zero nonce ttl", "[registry]\nnonce_ttl = \"0s\"\n", []string{"registry.nonce_ttl"}},
		{"no nonces per client", "[registry]\nmax_nonces_per_client = 0\n", []string{"registry.max_nonces_per_client"}},
		{"fewer nonces than per client", "[registry]\nmax_nonces = 4\n", []string{"registry.max_nonces"}},
		{"republish past the record lifetime", "[registry]\nrepublish_interval = \"30h\"\n", []string{"registry.republish_interval"}},
		{"bad provider name", "[[registry.oidc]]\nname = \"My IdP\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n", []string{"registry.oidc[0].name"}},
		{"bad issuer", "[[registry.oidc]]\nname = \"idp\"\nissuer = \"idp.example\"\nclient_id = \"c\"\n", []string{"registry.oidc[0].issuer"}},
		{"no client id", "[[registry.oidc]]\nname = \"idp\"\nissuer = \"https://idp.example\"\n", []string{"registry.oidc[0].client_id"}},
		{"open registration without development users", "[registry]\nallow_development_users = false\n", []string{"registry.open_registration", "allow_development_users"}},
		{"no new-user budget", "[registry]\nnew_users_per_attester = 0\n", []string{"registry.new_users_per_attester"}},
		{"zero new-user window", "[registry]\nnew_users_window = \"0s\"\n", []string{"registry.new_users_window"}},
		{"development users on mainnet", "[registry]\nopen_registration = false\n[chain]\nbackend = \"cardano\"\nnetwork = \"mainnet\"\nsocket = \"/x\"\npayment_key = \"/y\"\n", []string{"registry.allow_development_users", "mainnet"}},
		{"duplicate provider", "[[registry.oidc]]\nname = \"idp\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n[[registry.oidc]]\nname = \"idp\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n", []string{"registry.oidc[1].name", "twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeConfig(DefaultConfig(), "test.toml", []byte(c.doc))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(c.want, "test.toml") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestDecodeConfigOverridesOnlyWhatItSets(t *testing.T) {
	cfg, err := DecodeConfig(DefaultConfig(), "t", []byte("[api]\nlisten = \"127.0.0.1:9000\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.API.Listen = "127.0.0.1:9000"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

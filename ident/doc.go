// Package ident holds the identities and public keys that clients and nodes
// share: user, device and link IDs, public key bundles, and user chains as
// data with their verification, so any side checks a chain from the user ID
// alone without importing the client's protocol package (e2ee).
package ident

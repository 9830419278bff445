// Package e2ee is Volo's client-side end-to-end encryption protocol: device keys, user chains,
// key distribution, sessions, groups, safety numbers and backup encryption, as pure functions over bytes.
package e2ee

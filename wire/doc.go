// Package wire holds the formats that cross between a client and a node:
// envelopes, the WebSocket frames and the messages a device signs for them.
package wire

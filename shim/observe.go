package shim

// Observer is told about CONNECT requests and tunnels (metrics). Its
// methods must not block.
type Observer interface {
	// Connect is told the outcome of every CONNECT request: "intercept",
	// "tunnel", "deny", "bad-request" or "proxy-auth-failed".
	Connect(decision string)
	// TunnelOpened and TunnelClosed bracket each tunnel's splice.
	TunnelOpened()
	TunnelClosed()
}

// nopObserver is the default Observer.
type nopObserver struct{}

func (nopObserver) Connect(string) {}
func (nopObserver) TunnelOpened()  {}
func (nopObserver) TunnelClosed()  {}

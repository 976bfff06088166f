package cache

import "time"

// The in-flight protocol under Do, exported for the tests of package
// cache_test.

type (
	Role = role
	Call = call
)

const (
	Hit      = hit
	Leader   = leader
	Follower = follower
)

func (c *call) Done() <-chan struct{}   { return c.done }
func (c *call) Result() (*Value, error) { return c.value, c.err }

func (c *Cache) Lookup(model string, k Key, now time.Time, lookup bool) (*Value, *Call, Role) {
	return c.lookup(model, k, now, Options{NoLookup: !lookup})
}

func (c *Cache) Complete(model string, k Key, cl *Call, v *Value, err error, expires time.Time, store bool) {
	c.complete(model, k, cl, v, err, expires, Options{NoStore: !store})
}

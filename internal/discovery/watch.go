package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// DefaultDebounce is Config.Debounce's default.
const DefaultDebounce = 50 * time.Millisecond

// Config configures a Watcher.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface

	// Namespace limits the watch to one namespace; "" watches all.
	Namespace string

	// Debounce is how long a change waits for more before Changed is
	// called (never longer), so that a rollout's burst of events gives a
	// few updates. Zero means DefaultDebounce.
	Debounce time.Duration

	// Changed is called from Run's goroutine once the caches have synced,
	// then after each burst of changes to labelled Services or to
	// EndpointSlices. Required.
	Changed func(ctx context.Context)

	// Logger receives the watch's errors. Nil discards them.
	Logger *slog.Logger
}

// Watcher watches Services labelled LabelModel and the EndpointSlices
// labelled LabelServiceName with client-go informers. Create it with New,
// run it with Run; Found is safe for concurrent use once Run has called
// Changed.
type Watcher struct {
	cfg      Config
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	svcInf   informers.SharedInformerFactory
	sliceInf informers.SharedInformerFactory
}

// New returns a Watcher; it starts nothing.
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil || cfg.Changed == nil {
		return nil, errors.New("discovery: Config.Client and Config.Changed are required")
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	selectorOf := func(label string) string {
		r, err := labels.NewRequirement(label, selection.Exists, nil)
		if err != nil {
			panic(err) // only for this package's constant, valid labels
		}
		return labels.NewSelector().Add(*r).String()
	}
	factory := func(label string) informers.SharedInformerFactory {
		sel := selectorOf(label)
		return informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
			informers.WithNamespace(cfg.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	}
	w := &Watcher{cfg: cfg, svcInf: factory(LabelModel), sliceInf: factory(LabelServiceName)}
	w.services = w.svcInf.Core().V1().Services().Lister()
	w.slices = w.sliceInf.Discovery().V1().EndpointSlices().Lister()
	return w, nil
}

// Run starts the informers, waits for their caches, calls Changed, and
// then calls it after every debounced burst of changes until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke(kick) },
		UpdateFunc: func(any, any) { poke(kick) },
		DeleteFunc: func(any) { poke(kick) },
	}
	for _, inf := range []cache.SharedIndexInformer{
		w.svcInf.Core().V1().Services().Informer(),
		w.sliceInf.Discovery().V1().EndpointSlices().Informer(),
	} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			w.cfg.Logger.Warn("kubernetes watch failed; retrying", "err", err)
		}); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	w.svcInf.Start(ctx.Done())
	w.sliceInf.Start(ctx.Done())
	defer w.svcInf.Shutdown()
	defer w.sliceInf.Shutdown()
	for _, synced := range []map[reflect.Type]bool{w.svcInf.WaitForCacheSync(ctx.Done()), w.sliceInf.WaitForCacheSync(ctx.Done())} {
		for typ, ok := range synced {
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("discovery: the cache of %v did not sync", typ)
			}
		}
	}
	// The first Changed covers every event the sync delivered.
	drain(kick)
	w.cfg.Changed(ctx)
	Debounce(ctx, kick, w.cfg.Debounce, func() { w.cfg.Changed(ctx) })
	return nil
}

// Found builds what the caches hold now (Build), with protocol as Build's.
func (w *Watcher) Found(protocol func(model string) string) (Found, error) {
	svcs, err := w.services.List(labels.Everything())
	if err != nil {
		return Found{}, fmt.Errorf("discovery: services: %w", err)
	}
	eps, err := w.slices.List(labels.Everything())
	if err != nil {
		return Found{}, fmt.Errorf("discovery: endpointslices: %w", err)
	}
	return Build(svcs, eps, protocol), nil
}

// Debounce calls fn d after each first signal on kick, until ctx ends:
// the signals that come meanwhile join that call, so a burst of events
// gives one call, and none waits more than d (plus fn's run) for its own.
func Debounce(ctx context.Context, kick <-chan struct{}, d time.Duration, fn func()) {
	t := time.NewTimer(d)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		drain(kick)
		fn()
	}
}

// poke signals kick without blocking: one pending signal is enough.
func poke(kick chan<- struct{}) {
	select {
	case kick <- struct{}{}:
	default:
	}
}

// drain takes a pending signal off kick, if any.
func drain(kick <-chan struct{}) {
	select {
	case <-kick:
	default:
	}
}

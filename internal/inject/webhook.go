package inject

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Webhook paths. The MutatingWebhookConfiguration's selectors choose which
// pods are sent (opted-in namespaces, pods labelled "true"); the path says
// whether the pod's namespace has Istio injection on, which the webhook
// cannot see otherwise.
const (
	Path      = "/inject"
	PathIstio = "/inject/istio"
)

// maxReviewBytes bounds an AdmissionReview body (the API server's own
// request limit is 3MiB).
const maxReviewBytes = 8 << 20

// Webhook is the mutating admission webhook: AdmissionReview v1 for Pods
// on Path and PathIstio. Every pod it is sent is treated as opted in by its
// namespace (the configuration's selectors did the choosing), then Decide
// applies: opted-out, host-network and injected pods get no patch. A pod
// whose annotations cannot be read is refused with the reason.
type Webhook struct {
	Settings Settings
	// DefaultPorts, when Settings.Ports is "", gives the default captured
	// ports at each request (the control plane's current model ports).
	DefaultPorts func() string
	Logger       *slog.Logger // nil: slog.Default()
}

// Handler returns the webhook's routes.
func (w *Webhook) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path, func(rw http.ResponseWriter, r *http.Request) { w.serve(rw, r, false) })
	mux.HandleFunc("POST "+PathIstio, func(rw http.ResponseWriter, r *http.Request) { w.serve(rw, r, true) })
	return mux
}

func (w *Webhook) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.Default()
	}
	return w.Logger
}

func (w *Webhook) serve(rw http.ResponseWriter, r *http.Request, istio bool) {
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxReviewBytes))
	if err != nil {
		http.Error(rw, "inject: reading the AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(rw, "inject: decoding the AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(rw, "inject: the AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	resp := w.review(review.Request, Scope{NamespaceEnabled: true, NamespaceIstio: istio})
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Response: resp}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(rw, "inject: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(b)
}

// review answers one admission request.
func (w *Webhook) review(req *admissionv1.AdmissionRequest, scope Scope) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	// Only a pod's creation is injected; its spec is immutable after.
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		return allow
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(fmt.Errorf("inject: decoding the pod: %w", err))
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	s := w.Settings
	if s.Ports == "" && w.DefaultPorts != nil {
		s.Ports = w.DefaultPorts()
	}
	out, injected, reason, err := Pod(&pod, s, scope)
	if err != nil {
		w.logger().Warn("pod injection refused", "namespace", req.Namespace, "pod", name, "err", err)
		return deny(err)
	}
	if !injected {
		w.logger().Debug("pod left alone", "namespace", req.Namespace, "pod", name, "reason", reason)
		return allow
	}
	patch, err := Patch(&pod, out)
	if err != nil {
		return deny(err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	w.logger().Info("pod injected", "namespace", req.Namespace, "pod", name, "reason", reason)
	return allow
}

func deny(err error) *admissionv1.AdmissionResponse {
	msg := err.Error()
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Message: msg, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest},
	}
}

package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const manifestPath = "kubernetes/daemonset.yaml"

// The types below are the part of the Kubernetes API (apps/v1 DaemonSet,
// core/v1 Service) that the manifest uses, with the API's field names.
// The manifest is decoded strictly: a field they do not declare fails the
// test, so a misspelt or misplaced field is caught. A new field is added
// here after checking it against the API reference. (Decoding into
// k8s.io/api's own types would pull in 17 modules and about a minute of
// compilation on this project's CI machine.)

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// intOrString is the API's IntOrString: a port number or a port name.
type intOrString struct {
	Int int
	Str string
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	if n.Tag == "!!int" {
		i, err := strconv.Atoi(n.Value)
		v.Int = i
		return err
	}
	v.Str = n.Value
	return nil
}

func (v intOrString) String() string {
	if v.Str != "" {
		return v.Str
	}
	return strconv.Itoa(v.Int)
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int32 `yaml:"initialDelaySeconds"`
	PeriodSeconds       int32 `yaml:"periodSeconds"`
	TimeoutSeconds      int32 `yaml:"timeoutSeconds"`
	FailureThreshold    int32 `yaml:"failureThreshold"`
	SuccessThreshold    int32 `yaml:"successThreshold"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int32  `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports           []containerPort `yaml:"ports"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		Privileged               *bool `yaml:"privileged"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type volume struct {
	Name     string `yaml:"name"`
	HostPath *struct {
		Path string `yaml:"path"`
		Type string `yaml:"type"`
	} `yaml:"hostPath"`
	Secret *struct {
		SecretName  string `yaml:"secretName"`
		DefaultMode *int32 `yaml:"defaultMode"`
	} `yaml:"secret"`
}

type toleration struct {
	Key      string `yaml:"key"`
	Operator string `yaml:"operator"`
	Value    string `yaml:"value"`
	Effect   string `yaml:"effect"`
}

type podSpec struct {
	RuntimeClassName             string            `yaml:"runtimeClassName"`
	NodeSelector                 map[string]string `yaml:"nodeSelector"`
	AutomountServiceAccountToken *bool             `yaml:"automountServiceAccountToken"`
	TerminationGracePeriod       *int64            `yaml:"terminationGracePeriodSeconds"`
	Tolerations                  []toleration      `yaml:"tolerations"`
	SecurityContext              struct {
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		RunAsUser      *int64 `yaml:"runAsUser"`
		RunAsGroup     *int64 `yaml:"runAsGroup"`
		FSGroup        *int64 `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []volume    `yaml:"volumes"`
}

type daemonSet struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		UpdateStrategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable intOrString `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"updateStrategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string      `yaml:"name"`
			Port       int32       `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// strictDecode decodes one YAML document into v, refusing fields v does
// not declare.
func strictDecode(doc []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// readManifest decodes the manifest's two documents, the DaemonSet and the
// Service, strictly.
func readManifest(t *testing.T) (*daemonSet, *service) {
	t.Helper()
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var ds *daemonSet
	var svc *service
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for i := 1; ; i++ {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: document %d: %v", manifestPath, i, err)
		}
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if err := doc.Decode(&head); err != nil {
			t.Fatalf("%s: document %d: %v", manifestPath, i, err)
		}
		raw, err := yaml.Marshal(&doc)
		if err != nil {
			t.Fatal(err)
		}
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 DaemonSet":
			ds = new(daemonSet)
			err = strictDecode(raw, ds)
		case "v1 Service":
			svc = new(service)
			err = strictDecode(raw, svc)
		default:
			t.Fatalf("%s: document %d is %s %s; the test knows apps/v1 DaemonSet and v1 Service", manifestPath, i, head.APIVersion, head.Kind)
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", manifestPath, head.Kind, err)
		}
	}
	if ds == nil || svc == nil {
		t.Fatalf("%s: want a DaemonSet and a Service", manifestPath)
	}
	return ds, svc
}

// probePaths returns the HTTP paths of the DaemonSet's probes.
func probePaths(t *testing.T) []string {
	t.Helper()
	ds, _ := readManifest(t)
	var paths []string
	for _, c := range ds.Spec.Template.Spec.Containers {
		for _, p := range []*probe{c.LivenessProbe, c.ReadinessProbe} {
			if p != nil && p.HTTPGet != nil {
				paths = append(paths, p.HTTPGet.Path)
			}
		}
	}
	return paths
}

// TestKubernetesManifest checks the DaemonSet and the Service against the
// daemon: flags that serve documents and accepts, the container port the
// daemon listens on and named, liveness on /healthz and readiness on
// /readyz at that port, every path the daemon writes on a volume (the root
// file system is read-only), the token from a Secret, GPU scheduling and a
// non-root security context, and a Service that selects the pods and
// keeps the not-ready ones (a stopped worker's metrics matter most).
func TestKubernetesManifest(t *testing.T) {
	ds, svc := readManifest(t)
	pod := ds.Spec.Template.Spec
	if !maps.Equal(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Metadata.Labels) || len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("DaemonSet selector %v does not match the pod labels %v", ds.Spec.Selector.MatchLabels, ds.Spec.Template.Metadata.Labels)
	}
	if pod.RuntimeClassName != "nvidia" {
		t.Errorf("runtimeClassName = %q, want nvidia", pod.RuntimeClassName)
	}
	gpuNode := false
	for k := range pod.NodeSelector {
		gpuNode = gpuNode || strings.HasPrefix(k, "nvidia.com/gpu")
	}
	if !gpuNode {
		t.Errorf("nodeSelector %v selects no nvidia.com/gpu nodes", pod.NodeSelector)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl toleration) bool { return tl.Key == "nvidia.com/gpu" }) {
		t.Error("no toleration for the nvidia.com/gpu taint")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("the pod has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) > 0 {
		t.Errorf("container command %q replaces the image's entrypoint (vramseal serve); pass flags as args", c.Command)
	}
	flags := checkServeArgs(t, manifestPath, c.Args)
	port := listenPort(t, manifestPath, flags["listen"])

	// The daemon's port, named, and the probes on it.
	var named containerPort
	for _, p := range c.Ports {
		if strconv.Itoa(int(p.ContainerPort)) == port {
			named = p
		}
	}
	if named.Name == "" {
		t.Fatalf("no named container port for --listen port %s (ports %+v)", port, c.Ports)
	}
	for _, tt := range []struct {
		name string
		p    *probe
		path string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		switch {
		case tt.p == nil || tt.p.HTTPGet == nil:
			t.Errorf("%s: want an httpGet probe on %s", tt.name, tt.path)
		case tt.p.HTTPGet.Path != tt.path:
			t.Errorf("%s path = %q, want %s", tt.name, tt.p.HTTPGet.Path, tt.path)
		case tt.p.HTTPGet.Port.String() != named.Name && tt.p.HTTPGet.Port.String() != port:
			t.Errorf("%s port = %s, want %s (%s)", tt.name, tt.p.HTTPGet.Port, named.Name, port)
		case tt.p.HTTPGet.Scheme != "" && tt.p.HTTPGet.Scheme != "HTTP":
			t.Errorf("%s scheme = %s; the daemon serves plain HTTP", tt.name, tt.p.HTTPGet.Scheme)
		}
	}

	// Security context.
	sc := c.SecurityContext
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot)
	if !nonRoot || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user (runAsNonRoot and a non-zero runAsUser)")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || (sc.Privileged != nil && *sc.Privileged) {
		t.Error("allowPrivilegeEscalation must be false and the container not privileged")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities drop %v add %v, want drop [ALL] and nothing added", sc.Capabilities.Drop, sc.Capabilities.Add)
	}

	// Volumes: every mount names a volume; every path the daemon writes
	// or reads lies on one; the token comes from a Secret.
	volumes := map[string]volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mountOf := func(p string) (mountPath string, v volume, readOnly bool) {
		for _, m := range c.VolumeMounts {
			if (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) && len(m.MountPath) > len(mountPath) {
				mountPath, v, readOnly = m.MountPath, volumes[m.Name], m.ReadOnly
			}
		}
		return mountPath, v, readOnly
	}
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("volumeMount %s names no volume", m.Name)
		}
	}
	for _, tt := range []struct {
		flag     string
		dir      bool // the flag names a directory, not a file in one
		writable bool
		hostPath bool
	}{
		{"data-dir", true, true, true},
		{"audit-dir", true, true, true},
		{"attach-socket", false, true, true},
		{"token-file", false, false, false},
	} {
		p, ok := flags[tt.flag]
		if !ok {
			continue
		}
		dir := p
		if !tt.dir {
			dir = path.Dir(p)
		}
		mp, v, ro := mountOf(dir)
		switch {
		case mp == "":
			t.Errorf("--%s %s is on no volume, and the root file system is read-only", tt.flag, p)
		case tt.writable && ro:
			t.Errorf("--%s %s is on a read-only mount", tt.flag, p)
		case tt.hostPath && v.HostPath == nil:
			t.Errorf("--%s %s must be on a hostPath volume: it must outlive the pod (or be shared with the node's inference pods)", tt.flag, p)
		}
	}
	if _, v, _ := mountOf(path.Dir(flags["token-file"])); flags["token-file"] == "" || v.Secret == nil {
		t.Error("--token-file must name a file on a Secret volume")
	} else if m := v.Secret.DefaultMode; m == nil || (*m != 0o400 && *m != 0o440) {
		got := "unset"
		if m != nil {
			got = fmt.Sprintf("%#o", *m)
		}
		t.Errorf("token Secret volume defaultMode %s, want 0400 or 0440 (octal): others must not read the token", got)
	}
	if _, v, _ := mountOf(flags["data-dir"]); v.HostPath != nil && v.HostPath.Type != "Directory" {
		t.Errorf("data-dir hostPath type %q: kubelet would create it owned by root, where the non-root daemon cannot write; want Directory, prepared on the node", v.HostPath.Type)
	}

	// The Service.
	if !maps.Equal(svc.Spec.Selector, ds.Spec.Template.Metadata.Labels) {
		t.Errorf("Service selector %v does not select the pods (labels %v)", svc.Spec.Selector, ds.Spec.Template.Metadata.Labels)
	}
	if svc.Metadata.Namespace != ds.Metadata.Namespace {
		t.Errorf("Service namespace %q, DaemonSet namespace %q", svc.Metadata.Namespace, ds.Metadata.Namespace)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Error("the metrics Service must publish not-ready addresses: /readyz fails exactly while the worker is stopped")
	}
	if len(svc.Spec.Ports) != 1 || (svc.Spec.Ports[0].TargetPort.String() != named.Name && svc.Spec.Ports[0].TargetPort.String() != port) || svc.Spec.Ports[0].Name == "" {
		t.Errorf("Service ports %+v: want one named port targeting %s", svc.Spec.Ports, named.Name)
	}
}

// TestKubernetesManifestStrict checks that the strict decoding refuses a
// misspelt field, so that the manifest check can fail.
func TestKubernetesManifestStrict(t *testing.T) {
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := bytes.Cut(b, []byte("\n---\n"))
	bad := bytes.Replace(doc, []byte("readinessProbe:"), []byte("readynessProbe:"), 1)
	if bytes.Equal(bad, doc) {
		t.Fatal("the manifest has no readinessProbe to misspell")
	}
	if err := strictDecode(bad, new(daemonSet)); err == nil {
		t.Error("strict decoding accepted readynessProbe")
	}
}

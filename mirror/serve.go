package mirror

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p7bundle/p7bundle/bundle"
)

// Server answers the read side of the OCI Distribution API straight from
// bundle files: the repositories and tags a push would create at a site,
// every blob read through the seek table and checked as it streams.
type Server struct {
	repos     map[string]*servedRepo
	blobs     *ArchiveStore
	referrers map[digest.Digest][]ocispec.Descriptor
	// Authorize checks Basic credentials; nil serves everyone.
	Authorize func(user, password string) bool
	// Access receives one entry per request.
	Access func(AccessEntry)
	// Errorf reports a blob that failed its check mid-response.
	Errorf func(format string, args ...any)
}

type servedRepo struct {
	tags map[string]digest.Digest
	// content is every manifest and blob the repository's images name:
	// a repository answers for its own content only, as a registry does.
	content map[digest.Digest]bool
}

// AccessEntry is one request, as the access log writes it.
type AccessEntry struct {
	Time     time.Time `json:"time"`
	Remote   string    `json:"remote"`
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Status   int       `json:"status"`
	Bytes    int64     `json:"bytes"`
	Duration float64   `json:"seconds"`
	User     string    `json:"user,omitempty"`
}

// NewServer indexes the verified archives: repositories and tags under
// prefix as push would name them (a later archive's tag wins), every blob
// carried, and the referrers named by manifests' subject. A blob a
// differential bundle leaves to its base is served only when the base is
// among archives.
func NewServer(archives []*bundle.Archive, prefix string) (*Server, error) {
	s := &Server{repos: map[string]*servedRepo{}, blobs: NewArchiveStore(archives...), referrers: map[digest.Digest][]ocispec.Descriptor{}}
	for _, a := range archives {
		m := a.Manifest()
		for _, img := range m.Images {
			t, err := TargetFor(img.Ref, prefix)
			if err != nil {
				return nil, err
			}
			r := s.repos[t.Repository]
			if r == nil {
				r = &servedRepo{tags: map[string]digest.Digest{}, content: map[digest.Digest]bool{}}
				s.repos[t.Repository] = r
			}
			if t.Tag != "" {
				r.tags[t.Tag] = img.Digest
			}
			for _, d := range img.Blobs {
				r.content[d] = true
			}
		}
		meta, err := a.Metadata()
		if err != nil {
			return nil, err
		}
		for d, data := range meta {
			var doc struct {
				ArtifactType string              `json:"artifactType"`
				Config       *ocispec.Descriptor `json:"config"`
				Subject      *ocispec.Descriptor `json:"subject"`
				Annotations  map[string]string   `json:"annotations"`
			}
			if json.Unmarshal(data, &doc) != nil || doc.Subject == nil {
				continue
			}
			desc, _ := s.blobs.Descriptor(d)
			desc.ArtifactType, desc.Annotations = doc.ArtifactType, doc.Annotations
			if desc.ArtifactType == "" && doc.Config != nil {
				desc.ArtifactType = doc.Config.MediaType
			}
			if !slices.ContainsFunc(s.referrers[doc.Subject.Digest], func(o ocispec.Descriptor) bool { return o.Digest == d }) {
				s.referrers[doc.Subject.Digest] = append(s.referrers[doc.Subject.Digest], desc)
			}
		}
	}
	for _, refs := range s.referrers {
		slices.SortFunc(refs, func(a, b ocispec.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	}
	return s, nil
}

// Repositories lists the repositories served, sorted.
func (s *Server) Repositories() []string {
	out := make([]string, 0, len(s.repos))
	for r := range s.repos {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Tags lists a repository's tags, sorted.
func (s *Server) Tags(repo string) []string {
	r := s.repos[repo]
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.tags))
	for t := range r.tags {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

func (s *Server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	lw := &loggedWriter{ResponseWriter: w, status: http.StatusOK}
	user := ""
	defer func() {
		if s.Access != nil {
			s.Access(AccessEntry{Time: start.UTC(), Remote: req.RemoteAddr, Method: req.Method, Path: req.URL.RequestURI(),
				Status: lw.status, Bytes: lw.bytes, Duration: time.Since(start).Seconds(), User: user})
		}
	}()
	w = lw
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if s.Authorize != nil {
		u, p, ok := req.BasicAuth()
		if !ok || !s.Authorize(u, p) {
			w.Header().Set("WWW-Authenticate", `Basic realm="p7bundle serve"`)
			ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		user = u
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "p7bundle serve is read-only: "+req.Method+" is not allowed")
		return
	}
	p := req.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		writeJSON(w, req, http.StatusOK, struct{}{})
	case p == "/v2/_catalog":
		items, link, err := page(s.Repositories(), req.URL.Query(), "/v2/_catalog")
		if err != nil {
			ociError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", err.Error())
			return
		}
		if link != "" {
			w.Header().Set("Link", link)
		}
		writeJSON(w, req, http.StatusOK, map[string][]string{"repositories": items})
	case strings.HasPrefix(p, "/v2/"):
		s.serveRepo(w, req, strings.TrimPrefix(p, "/v2/"))
	default:
		ociError(w, http.StatusNotFound, "NOT_FOUND", "not an OCI distribution path")
	}
}

// serveRepo answers NAME/manifests/REF, NAME/blobs/DIGEST,
// NAME/tags/list and NAME/referrers/DIGEST; NAME may hold slashes.
func (s *Server) serveRepo(w http.ResponseWriter, req *http.Request, rest string) {
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		if s.repos[name] == nil {
			ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository "+name+" is not in the bundles served")
			return
		}
		tags, link, err := page(s.Tags(name), req.URL.Query(), "/v2/"+name+"/tags/list")
		if err != nil {
			ociError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", err.Error())
			return
		}
		if link != "" {
			w.Header().Set("Link", link)
		}
		writeJSON(w, req, http.StatusOK, map[string]any{"name": name, "tags": tags})
		return
	}
	for _, kind := range []string{"/manifests/", "/blobs/", "/referrers/"} {
		i := strings.LastIndex(rest, kind)
		if i <= 0 {
			continue
		}
		name, ref := rest[:i], rest[i+len(kind):]
		repo := s.repos[name]
		if repo == nil {
			ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository "+name+" is not in the bundles served")
			return
		}
		switch kind {
		case "/manifests/":
			s.serveManifest(w, req, name, repo, ref)
		case "/blobs/":
			s.serveBlob(w, req, name, repo, ref)
		default:
			s.serveReferrers(w, req, repo, ref)
		}
		return
	}
	ociError(w, http.StatusNotFound, "NOT_FOUND", "not an OCI distribution path")
}

func (s *Server) serveManifest(w http.ResponseWriter, req *http.Request, name string, repo *servedRepo, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		var ok bool
		if d, ok = repo.tags[ref]; !ok {
			ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "tag "+ref+" is not in "+name)
			return
		}
	}
	b, ok := s.blobs.Descriptor(d)
	if !ok || !repo.content[d] || !(bundle.IsManifest(b.MediaType) || bundle.IsIndex(b.MediaType)) {
		ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest "+ref+" is not in "+name)
		return
	}
	s.stream(w, req, b, b.MediaType)
}

func (s *Server) serveBlob(w http.ResponseWriter, req *http.Request, name string, repo *servedRepo, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", ref+" is not a digest")
		return
	}
	b, ok := s.blobs.Descriptor(d)
	if !ok || !repo.content[d] {
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob "+ref+" is not in "+name)
		return
	}
	s.stream(w, req, b, "application/octet-stream")
}

func (s *Server) serveReferrers(w http.ResponseWriter, req *http.Request, repo *servedRepo, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", ref+" is not a digest")
		return
	}
	refs := []ocispec.Descriptor{}
	filter := req.URL.Query().Get("artifactType")
	for _, r := range s.referrers[d] {
		if repo.content[r.Digest] && (filter == "" || r.ArtifactType == filter) {
			refs = append(refs, r)
		}
	}
	if filter != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	writeJSON(w, req, http.StatusOK, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: refs})
}

// stream sends a blob (or the Range asked for), read from its bundle and
// checked as it goes. The last bytes are held back until the whole blob
// has matched its digest: on a mismatch the connection is cut, so no
// client ever receives a complete response of unverified bytes.
func (s *Server) stream(w http.ResponseWriter, req *http.Request, b ocispec.Descriptor, contentType string) {
	d := b.Digest
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Type", contentType)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+d.String()+`"`)
	from, to, partial, err := byteRange(req.Header.Get("Range"), b.Size)
	if err != nil {
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(b.Size, 10))
		ociError(w, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", err.Error())
		return
	}
	h.Set("Content-Length", strconv.FormatInt(to-from, 10))
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to-1, b.Size))
		status = http.StatusPartialContent
	}
	if req.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	r, err := s.blobs.Fetch(req.Context(), b)
	if err != nil {
		s.report("%s: %v", d, err)
		ociError(w, http.StatusInternalServerError, "BLOB_UNKNOWN", "blob "+d.String()+" cannot be read from its bundle")
		return
	}
	defer r.Close()
	w.WriteHeader(status)
	if err := copyVerified(w, r, from, to); err != nil {
		s.report("%s: %v: response to %s %s cut", d, err, req.Method, req.URL.Path)
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) report(format string, args ...any) {
	if s.Errorf != nil {
		s.Errorf(format, args...)
	}
}

// copyVerified writes bytes [from, to) of r to w, reads r to its end (where
// the entry reader checks the digest), and only then writes the last
// chunk of the range.
func copyVerified(w io.Writer, r io.Reader, from, to int64) error {
	// Two buffers: one is read into while the other holds the pending chunk.
	bufs := [2][]byte{make([]byte, 256<<10), make([]byte, 256<<10)}
	next := 0
	var pending []byte
	var off int64
	for {
		buf := bufs[next]
		n, err := r.Read(buf)
		chunk := buf[:n]
		// The part of this chunk inside the range.
		lo, hi := max(from-off, 0), min(to-off, int64(n))
		off += int64(n)
		if lo < hi {
			if len(pending) > 0 {
				if _, werr := w.Write(pending); werr != nil {
					return werr
				}
			}
			pending = chunk[lo:hi]
			next ^= 1
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if len(pending) > 0 {
		_, err := w.Write(pending)
		return err
	}
	return nil
}

// byteRange parses a single "bytes=" range; no header is the whole blob.
func byteRange(h string, size int64) (from, to int64, partial bool, err error) {
	if h == "" {
		return 0, size, false, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false, fmt.Errorf("range %q: only one bytes range is served", h)
	}
	a, b, _ := strings.Cut(spec, "-")
	switch {
	case a == "":
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false, fmt.Errorf("range %q is not valid", h)
		}
		return max(size-n, 0), size, true, nil
	default:
		from, err = strconv.ParseInt(a, 10, 64)
		if err != nil || from < 0 || from >= size {
			return 0, 0, false, fmt.Errorf("range %q is outside the %d bytes", h, size)
		}
		to = size
		if b != "" {
			last, err := strconv.ParseInt(b, 10, 64)
			if err != nil || last < from {
				return 0, 0, false, fmt.Errorf("range %q is not valid", h)
			}
			to = min(last+1, size)
		}
		return from, to, true, nil
	}
}

// page applies the API's n/last pagination to sorted items.
func page(items []string, q url.Values, path string) ([]string, string, error) {
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(items, last)
		for i < len(items) && items[i] <= last {
			i++
		}
		items = items[i:]
	}
	if q.Get("n") == "" {
		return items, "", nil
	}
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 0 {
		return nil, "", fmt.Errorf("n=%q is not a count", q.Get("n"))
	}
	if n >= len(items) {
		return items, "", nil
	}
	items = items[:n]
	if n == 0 {
		return items, "", nil
	}
	next := url.Values{"n": {strconv.Itoa(n)}, "last": {items[n-1]}}
	return items, fmt.Sprintf(`<%s?%s>; rel="next"`, path, next.Encode()), nil
}

func writeJSON(w http.ResponseWriter, req *http.Request, status int, v any) {
	b, _ := json.Marshal(v)
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		w.Write(b)
	}
}

// ociError writes the error body the distribution spec defines.
func ociError(w http.ResponseWriter, status int, code, message string) {
	b, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

type loggedWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (l *loggedWriter) WriteHeader(code int) {
	if !l.wrote {
		l.status, l.wrote = code, true
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *loggedWriter) Write(p []byte) (int, error) {
	l.wrote = true
	n, err := l.ResponseWriter.Write(p)
	l.bytes += int64(n)
	return n, err
}

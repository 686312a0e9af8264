// Package inventory renders a bundle's manifest as a CycloneDX BOM, the
// inventory security scanners read: the bundle as the root component, the
// chart and every image (a container with its digest and pkg:oci purl;
// the vendor's cosign signatures carried with it are a property of it).
package inventory

import (
	"bytes"
	"path"
	"strconv"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/uuid"
	"github.com/package-url/packageurl-go"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/imageref"
)

const propertyPrefix = "p7bundle:"

// CycloneDX is the BOM (spec 1.6) of the bundle named bundleName. It is
// made from the manifest alone, so the same bundle always gives the same
// bytes: the serial number derives from the manifest digest, the
// timestamp is the bundle's SOURCE_DATE_EPOCH (absent when unset).
func CycloneDX(m *bundle.Manifest, bundleName string) (*cdx.BOM, error) {
	manifestDigest, err := m.Digest()
	if err != nil {
		return nil, err
	}
	bom := cdx.NewBOM()
	bom.SpecVersion = cdx.SpecVersion1_6
	bom.SerialNumber = "urn:uuid:" + uuid.NewSHA1(uuid.NameSpaceURL, []byte("p7bundle:"+manifestDigest)).String()
	root := cdx.Component{
		BOMRef:  "bundle",
		Type:    cdx.ComponentTypeFile,
		Name:    path.Base(bundleName),
		Version: m.Chart.Version,
		Properties: props(
			"manifestDigest", manifestDigest,
			"formatVersion", strconv.Itoa(m.FormatVersion),
			"sourceRegistry", m.SourceRegistry,
			"platforms", strings.Join(m.Platforms, ","),
			"secretgen", m.Secretgen,
		),
	}
	if m.Base != nil {
		*root.Properties = append(*root.Properties, *props("base", m.Base.Name, "baseManifestDigest", m.Base.ManifestDigest)...)
	}
	bom.Metadata = &cdx.Metadata{
		Timestamp: m.Created,
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: m.Tool.Name, Version: m.Tool.Version,
		}}},
		Component: &root,
	}
	chart := cdx.Component{
		BOMRef:  "chart:" + m.Chart.Name + "@" + m.Chart.Version,
		Type:    cdx.ComponentTypeApplication,
		Name:    m.Chart.Name,
		Version: m.Chart.Version,
		Hashes:  sha256Hash(m.Chart.Digest.String()),
		Properties: props(
			"kind", "helm-chart",
			"appVersion", m.Chart.AppVersion,
			"path", m.Chart.Path,
		),
	}
	components := []cdx.Component{chart}
	deps := []string{chart.BOMRef}
	signatures := map[string]string{} // image digest -> its cosign signatures
	for _, img := range m.Images {
		if img.Signs != "" {
			signatures[img.Signs.String()] = img.Ref
		}
	}
	for _, img := range m.ContainerImages() {
		c := container(img, signatures[img.Digest.String()])
		components = append(components, c)
		deps = append(deps, c.BOMRef)
	}
	bom.Components = &components
	dependencies := []cdx.Dependency{{Ref: root.BOMRef, Dependencies: &deps}}
	for _, ref := range deps {
		dependencies = append(dependencies, cdx.Dependency{Ref: ref})
	}
	bom.Dependencies = &dependencies
	return bom, nil
}

// container is one image: named by its repository, versioned by its tag,
// identified by its digest (hash and purl).
func container(img bundle.Image, signatures string) cdx.Component {
	name, tag, _ := imageref.Split(img.Ref)
	q := map[string]string{"repository_url": name}
	if tag != "" {
		q["tag"] = tag
	}
	if len(img.Platforms) == 1 {
		if _, arch, ok := strings.Cut(img.Platforms[0], "/"); ok {
			q["arch"] = strings.ReplaceAll(arch, "/", "")
		}
	}
	purl := packageurl.NewPackageURL(packageurl.TypeOCI, "", strings.ToLower(path.Base(name)), img.Digest.String(), packageurl.QualifiersFromMap(q), "")
	version := tag
	if version == "" {
		version = img.Digest.String()
	}
	p := props("ref", img.Ref, "platforms", strings.Join(img.Platforms, ","), "mediaType", img.MediaType,
		"size", strconv.FormatInt(img.Size, 10), "cosignSignatures", signatures)
	if img.SourceDigest != "" {
		*p = append(*p, *props("indexDigest", img.SourceDigest.String())...)
	}
	return cdx.Component{
		BOMRef:     img.Ref + "@" + img.Digest.String(),
		Type:       cdx.ComponentTypeContainer,
		Name:       name,
		Version:    version,
		Hashes:     sha256Hash(img.Digest.String()),
		PackageURL: purl.ToString(),
		Properties: p,
	}
}

func sha256Hash(d string) *[]cdx.Hash {
	hexDigest, ok := strings.CutPrefix(d, "sha256:")
	if !ok {
		return nil
	}
	return &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hexDigest}}
}

// props builds name/value pairs, skipping empty values.
func props(kv ...string) *[]cdx.Property {
	var out []cdx.Property
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			out = append(out, cdx.Property{Name: propertyPrefix + kv[i], Value: kv[i+1]})
		}
	}
	return &out
}

// Encode renders the BOM as indented JSON.
func Encode(bom *cdx.BOM) ([]byte, error) {
	var buf bytes.Buffer
	enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

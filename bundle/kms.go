package bundle

import (
	"context"
	"crypto"
	"fmt"
	"regexp"
	"strings"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/logging"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	awskms "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	"github.com/sigstore/sigstore/pkg/signature/options"

	// The KMS providers cosign supports; each reads its usual environment
	// (VAULT_ADDR/VAULT_TOKEN, AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*).
	_ "github.com/sigstore/sigstore/pkg/signature/kms/azure"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
)

// IsKMSKey reports whether ref is a cosign KMS key URI (hashivault://NAME,
// awskms://…, gcpkms://…, azurekms://…) rather than a file. Only the
// built-in providers count: sigstore would otherwise run a plugin program
// named after any other scheme.
func IsKMSKey(ref string) bool {
	for _, scheme := range kms.SupportedProviders() {
		if strings.HasPrefix(ref, scheme) {
			return true
		}
	}
	return false
}

// loadKMS resolves a KMS key and fetches its public key at once, so a wrong
// key name, an unreachable service or a refused token fail before any work.
func loadKMS(ctx context.Context, ref string) (kms.SignerVerifier, crypto.PublicKey, error) {
	var sv kms.SignerVerifier
	var err error
	if strings.HasPrefix(ref, awskms.ReferenceScheme) {
		// The AWS SDK logs its retries and IMDS fallbacks to stderr; what
		// matters of them is in the error.
		sv, err = awskms.LoadSignerVerifier(ctx, ref, awsconfig.WithLogger(logging.Nop{}))
	} else {
		sv, err = kms.Get(ctx, ref, crypto.SHA256)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key %s: %s", ErrKey, ref, oneLine(err))
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key %s: %s", ErrKey, ref, oneLine(err))
	}
	return sv, pub, nil
}

var spaces = regexp.MustCompile(`\s+`)

// oneLine folds a provider's multi-line error (Vault's API errors span
// several lines) into one.
func oneLine(err error) string {
	return strings.TrimSpace(spaces.ReplaceAllString(err.Error(), " "))
}

package blobsink

import (
	"errors"
	"syscall"

	"github.com/sluicelog/sluice/subscribers"
)

// Classify returns err marked subscribers.Permanent when it is the data's fault, so that the batcher
// splits the batch and dead-letters what cannot be stored, and err unchanged otherwise: the batch is
// retried and the failure counts towards the route's circuit breaker. nil stays nil. It decides from
// the errno, never from text; a remote store's errors come classified by the store (package
// azurestore: the Azure status and error code).
//
// A blob's body is opaque to the store and its name and headers are built from the configuration, the
// events' hour and a hash, so few store errors can be the data's:
//
//   - permanent: 413 or RequestBodyTooLarge (the blob is too large: halves make smaller blobs),
//     InvalidInput, InvalidBlobOrBlock, OutOfRangeInput, Md5Mismatch, Crc64Mismatch, InvalidMd5 (the
//     body was refused), and EFBIG from a DirStore (the file system's largest file). Events that
//     cannot be encoded are refused by the Sink before any upload, permanently (ErrInvalidEvent).
//   - transient: 408, 429 and 5xx (ServerBusy, OperationTimedOut, InternalError), network errors,
//     timeouts and cancellation, a DirStore's ENOSPC, EDQUOT, EIO, and anything unknown.
//   - transient although no retry fixes them: 401 and 403 (credentials, authorization), 404 (no
//     container), 409 and 412 other than BlobAlreadyExists (container being deleted, leases), other 400
//     codes such as InvalidHeaderValue (Azurite answers it to a service version it does not know: our
//     headers are constants, so it is never the data's fault), InvalidResourceName, and a DirStore's
//     ENAMETOOLONG, EACCES, EROFS. These are the configuration's fault: every batch fails alike, and
//     dead-lettering would only move all traffic to dead letters (whose names share the same prefix
//     and store, so they fail too). Transient, they open the route's breaker, /readyz shows it, and
//     writing resumes once the configuration is fixed. Config.Validate keeps prefixes short enough
//     for any store's names.
func Classify(err error) error {
	if err == nil || subscribers.IsPermanent(err) {
		return err
	}
	if permanentCause(err) {
		return subscribers.Permanent(err)
	}
	return err
}

func permanentCause(err error) bool {
	return errors.Is(err, syscall.EFBIG)
}

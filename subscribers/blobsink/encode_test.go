package blobsink

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// BenchmarkGzip measures the compressors the sink could use on one 1000-event NDJSON blob: the standard
// library's and klauspost's, at their default level and at best speed. It chose the sink's compressor:
// klauspost at its default level compressed about 2.5 times as fast as the standard library's default
// for 95% of its ratio (8 on realistic events; 200-340 MB/s on a shared 2-core machine), far faster
// than uploads.
func BenchmarkGzip(b *testing.B) {
	ndjson, err := event.Encode(sinktest.Events(1000, time.Now())...)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		new  func(level int) compressor
		lvl  int
	}{
		{"stdlib/default", stdGzip, gzip.DefaultCompression},
		{"stdlib/speed", stdGzip, gzip.BestSpeed},
		{"klauspost/default", kGzip, kgzip.DefaultCompression},
		{"klauspost/speed", kGzip, kgzip.BestSpeed},
		{"klauspost/2", kGzip, 2},
		{"klauspost/3", kGzip, 3},
		{"klauspost/4", kGzip, 4},
	} {
		b.Run(c.name, func(b *testing.B) {
			zw := c.new(c.lvl)
			var out bytes.Buffer
			b.SetBytes(int64(len(ndjson)))
			for b.Loop() {
				out.Reset()
				zw.Reset(&out)
				if _, err := zw.Write(ndjson); err != nil {
					b.Fatal(err)
				}
				if err := zw.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(ndjson))/float64(out.Len()), "ratio")
		})
	}
}

type compressor interface {
	io.WriteCloser
	Reset(io.Writer)
}

func stdGzip(level int) compressor {
	zw, err := gzip.NewWriterLevel(nil, level)
	if err != nil {
		panic(fmt.Sprint(level, err))
	}
	return zw
}

func kGzip(level int) compressor {
	zw, err := kgzip.NewWriterLevel(nil, level)
	if err != nil {
		panic(fmt.Sprint(level, err))
	}
	return zw
}

// Command kfake runs franz-go's in-process Kafka (github.com/twmb/franz-go/pkg/kfake) as a process of
// its own, for sluice's tests: the kafka driver's conformance test and the acceptance tests that kill
// -9 the broker and start it again on the same port and data directory (internal/testenv.Kafka builds
// and runs it). It is a module of its own so that kfake stays out of the library's go.mod; it is never
// shipped.
//
//	go build -o /tmp/kfake . && /tmp/kfake -port 9092 -data-dir /tmp/kfake-data
//
// It prints one line, "kfake ready <host:port>", once it accepts connections, and exits 0 on SIGTERM
// or SIGINT after closing the cluster (which flushes the data directory). With -data-dir the topics,
// their records, the consumer groups and their committed offsets survive a kill -9: a record that
// kfake acknowledged is in the OS's page cache, which a killed process does not lose (-sync fsyncs
// every write, for a machine crash).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kfake", flag.ContinueOnError)
	port := fs.Int("port", 9092, "TCP port on 127.0.0.1 (0: a free one, printed on the ready line)")
	dataDir := fs.String("data-dir", "", "directory that keeps topics, records and committed offsets across restarts and kill -9 (empty: in memory only)")
	sync := fs.Bool("sync", false, "fsync every write (survives a machine crash, slower)")
	partitions := fs.Int("partitions", 10, "partitions of a topic created without a count (-1 in CreateTopics, or auto-created)")
	topics := fs.String("topics", "", "comma-separated topics to create at start, with -partitions partitions each")
	autoCreate := fs.Bool("auto-create-topics", false, "create a topic that a client asks metadata for")
	minSession := fs.Duration("min-session-timeout", 6*time.Second, "smallest consumer group session timeout a member may ask for")
	logLevel := fs.String("log-level", "none", "none, error, warn, info or debug (to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *port < 0 || *port > 65535 {
		return fmt.Errorf("-port %d: must be between 0 and 65535", *port)
	}
	if *partitions <= 0 {
		return fmt.Errorf("-partitions %d: must be positive", *partitions)
	}
	levels := map[string]kfake.LogLevel{"none": kfake.LogLevelNone, "error": kfake.LogLevelError,
		"warn": kfake.LogLevelWarn, "info": kfake.LogLevelInfo, "debug": kfake.LogLevelDebug}
	level, ok := levels[strings.ToLower(*logLevel)]
	if !ok {
		return fmt.Errorf("-log-level %q: want none, error, warn, info or debug", *logLevel)
	}

	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(*port),
		kfake.DefaultNumPartitions(*partitions),
		kfake.GroupMinSessionTimeout(*minSession),
		kfake.WithLogger(kfake.BasicLogger(os.Stderr, level)),
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	if *sync {
		opts = append(opts, kfake.SyncWrites())
	}
	if *topics != "" {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), strings.Split(*topics, ",")...))
	}
	if *autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	fmt.Printf("kfake ready %s\n", c.ListenAddrs()[0])
	<-signals
	c.Close()
	return nil
}

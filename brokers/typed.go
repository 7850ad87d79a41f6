package brokers

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
)

// DriverOf returns the driver name whose settings are of type S: its Settings returns a pointer to
// defaults(), and its Open hands open the configured S (defaults() when it is given none) and refuses
// settings of another type.
func DriverOf[S any, B Broker](name, url string, defaults func() S, open func(ctx context.Context, url string, s S, log watermill.LoggerAdapter) (B, error)) Driver {
	return Driver{
		Name:     name,
		URL:      url,
		Settings: func() any { s := defaults(); return &s },
		Open: func(ctx context.Context, url string, settings any, log watermill.LoggerAdapter) (Broker, error) {
			s, ok := settings.(S)
			switch {
			case settings == nil:
				s = defaults()
			case !ok:
				return nil, fmt.Errorf("brokers: the settings of driver %s are of type %T, want %T", name, settings, s)
			}
			b, err := open(ctx, url, s, log)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	}
}

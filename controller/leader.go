package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderConfig configures leader election on a coordination.k8s.io Lease.
type LeaderConfig struct {
	Namespace     string
	Name          string
	Identity      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// WatchDog, when set, fails /healthz while this replica leads but cannot renew.
	WatchDog *leaderelection.HealthzAdaptor
}

// ErrLostLeadership is returned when this replica stops being the leader; the process
// should exit so that it restarts as a follower with fresh caches.
var ErrLostLeadership = errors.New("lost leadership")

// RunAsLeader blocks until this replica holds the Lease, then runs run until ctx ends or
// the lease is lost. On a clean shutdown the lease is released so the other replica takes
// over without waiting for it to expire.
func RunAsLeader(ctx context.Context, log *slog.Logger, kube kubernetes.Interface, lc LeaderConfig, run func(context.Context) error) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: lc.Namespace, Name: lc.Name},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: lc.Identity},
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	lost := false
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   lc.LeaseDuration,
		RenewDeadline:   lc.RenewDeadline,
		RetryPeriod:     lc.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            lc.Name,
		WatchDog:        lc.WatchDog,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("became leader", "lease", lc.Namespace+"/"+lc.Name, "identity", lc.Identity)
				runErr <- run(ctx)
				cancel()
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					lost = true
				}
				cancel()
			},
			OnNewLeader: func(id string) {
				if id != lc.Identity {
					log.Info("following leader", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(runCtx)
	select {
	case err := <-runErr:
		if err != nil {
			return err
		}
	default:
	}
	if lost {
		return ErrLostLeadership
	}
	return nil
}

package umh

import "time"

// Stage is one step of the last change of a table and its duration, as
// `xtbpf status --json` shows them: where the latency of a replace goes.
type Stage struct {
	Name string `json:"name"`
	US   int64  `json:"us"`
}

// stageClock times the steps of one change: each mark closes the step
// that began at the previous one.
type stageClock struct {
	last   time.Time
	stages []Stage
}

func newStageClock() *stageClock { return &stageClock{last: time.Now()} }

func (c *stageClock) mark(name string) {
	now := time.Now()
	c.stages = append(c.stages, Stage{Name: name, US: now.Sub(c.last).Microseconds()})
	c.last = now
}

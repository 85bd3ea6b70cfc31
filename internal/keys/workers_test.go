package keys

import "testing"

func TestWorkersKey(t *testing.T) {
	if got, want := Workers("app", "workers"), "{app|workers}|workers"; got != want {
		t.Fatalf("Workers = %q, want %q", got, want)
	}
	if Slot(Workers("app", "workers")) != Slot(Tag("app", "workers")) {
		t.Fatal("Workers key is not in its namespace's slot")
	}
}

package translate

import "fmt"

// Unsupported reports a table xtbpf cannot run exactly: the caller hands
// it to the kernel (fallback mode) or refuses it (strict mode).
type Unsupported struct {
	Chain     string
	Rule      int    // 1-based, as iptables numbers rules; 0 for the policy
	Extension string // match or target name; "" when about the rule itself
	Reason    string
	// what says whether Extension is a "match" or a "target", so the
	// message reads the way iptables users think of the rule.
	what string
}

func (u *Unsupported) Error() string {
	where := fmt.Sprintf("chain %s rule %d: ", u.Chain, u.Rule)
	switch {
	case u.Chain == "":
		// About the table as a whole (its rules together).
		where = ""
	case u.Rule == 0:
		where = fmt.Sprintf("chain %s policy: ", u.Chain)
	}
	if u.Extension == "" {
		return where + u.Reason
	}
	what := u.what
	if what == "" {
		what = "extension"
	}
	return fmt.Sprintf("%s%s %q: %s", where, what, u.Extension, u.Reason)
}

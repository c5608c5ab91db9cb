package daemonproto

// Protocol versions are major<<8 | minor; major is always 1.
const (
	serverVersion = 1<<8 | 38
	clientVersion = 1<<8 | 38
	// Nix itself refuses peers below 1.10; the ops this package serves need
	// nothing older.
	minPeerVersion = 1<<8 | 10
	// The client reads QueryPathInfo's valid flag and framed replies that
	// appeared by 1.21 (Nix 2.0 era daemons are not worth the extra gates).
	minDaemonVersion = 1<<8 | 21
)

func minor(v uint64) uint64 { return v & 0xff }
func major(v uint64) uint64 { return v >> 8 }

const (
	workerMagic1 = 0x6e697863
	workerMagic2 = 0x6478696f
)

// stderr channel message types.
const (
	stderrNext          = 0x6f6c6d67
	stderrRead          = 0x64617461
	stderrWrite         = 0x64617416
	stderrLast          = 0x616c7473
	stderrError         = 0x63787470
	stderrStartActivity = 0x53545254
	stderrStopActivity  = 0x53544f50
	stderrResult        = 0x52534c54
)

// Operation codes. Gaps are ops Nix removed long ago.
const (
	opIsValidPath                 = 1
	opHasSubstitutes              = 3
	opQueryPathHash               = 4
	opQueryReferences             = 5
	opQueryReferrers              = 6
	opAddToStore                  = 7
	opAddTextToStore              = 8
	opBuildPaths                  = 9
	opEnsurePath                  = 10
	opAddTempRoot                 = 11
	opAddIndirectRoot             = 12
	opSyncWithGC                  = 13
	opFindRoots                   = 14
	opQueryDeriver                = 18
	opSetOptions                  = 19
	opCollectGarbage              = 20
	opQuerySubstitutablePathInfo  = 21
	opQueryDerivationOutputs      = 22
	opQueryAllValidPaths          = 23
	opQueryPathInfo               = 26
	opQueryDerivationOutputNames  = 28
	opQueryPathFromHashPart       = 29
	opQuerySubstitutablePathInfos = 30
	opQueryValidPaths             = 31
	opQuerySubstitutablePaths     = 32
	opQueryValidDerivers          = 33
	opOptimiseStore               = 34
	opVerifyStore                 = 35
	opBuildDerivation             = 36
	opAddSignatures               = 37
	opNarFromPath                 = 38
	opAddToStoreNar               = 39
	opQueryMissing                = 40
	opQueryDerivationOutputMap    = 41
	opRegisterDrvOutput           = 42
	opQueryRealisation            = 43
	opAddMultipleToStore          = 44
	opAddBuildLog                 = 45
	opBuildPathsWithResults       = 46
	opAddPermRoot                 = 47
)

// BuildResult status codes used in replies.
const (
	buildStatusAlreadyValid   = 2
	buildStatusNoSubstituters = 14
)

// Features a 1.38 peer may offer. This server offers none, which keeps every
// layout at plain 1.38; the names matter only to recognise what was agreed.
const featureDeleteDeadSpecificReferrers = "delete-dead-specific-referrers"

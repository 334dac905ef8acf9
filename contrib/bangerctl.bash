# bash completion for bangerctl(1).
#
# Commands, their options and option values; VM ids are asked of bangerd
# itself (bangerctl list, on the socket given with --socket or
# $BANGER_SOCKET) and silently left out when it cannot be reached.

_bangerctl_ids()
{
	local socket=$1
	local -a args=()
	[[ -n $socket ]] && args=(--socket "$socket")
	# The table's first column, without its header line.
	bangerctl "${args[@]}" list 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_bangerctl()
{
	local cur prev words cword
	if declare -F _init_completion >/dev/null 2>&1; then
		_init_completion || return
	else
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD - 1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	fi

	local commands="register set get alive clear teardown unregister list reconcile watch status metrics"
	local global_opts="--socket --json --help --version"

	# Values of options that take one.
	case $prev in
	--socket | --api-sock | --loop-file | --output)
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	--loop)
		COMPREPLY=($(compgen -W "$(compgen -G '/dev/loop[0-9]*' 2>/dev/null)" -- "$cur"))
		return
		;;
	--on-exit)
		COMPREPLY=($(compgen -W "teardown keep" -- "$cur"))
		return
		;;
	--tap | --dm)
		return # a name the VM manager picks
		;;
	esac

	# Find the command and the socket; options may come before or after it.
	local i command="" socket=${BANGER_SOCKET:-} nargs=0
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--socket)
			socket=${words[i + 1]}
			i=$((i + 1))
			;;
		--socket=*) socket=${words[i]#--socket=} ;;
		--api-sock | --tap | --loop-file | --loop | --dm | --on-exit | --output) i=$((i + 1)) ;;
		-*) ;;
		*)
			if [[ -z $command ]]; then
				command=${words[i]}
			else
				nargs=$((nargs + 1))
			fi
			;;
		esac
	done

	if [[ -z $command ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi
		return
	fi

	local opts=""
	case $command in
	register) opts="--api-sock --tap --loop-file --dm --on-exit" ;;
	set) opts="--tap --loop --dm" ;;
	metrics) opts="--output" ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts $global_opts" -- "$cur"))
		return
	fi

	case $command in
	set | get | alive | clear | teardown | unregister)
		# The first argument is a VM id (set's second is a pid).
		if ((nargs == 0)); then
			COMPREPLY=($(compgen -W "$(_bangerctl_ids "$socket")" -- "$cur"))
		elif [[ $command == set && $nargs == 1 ]]; then
			COMPREPLY=($(compgen -W "$(pidof firecracker 2>/dev/null)" -- "$cur"))
		fi
		;;
	esac
}

complete -F _bangerctl bangerctl
